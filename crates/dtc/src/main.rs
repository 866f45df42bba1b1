//! `dtc`: one binary, a subcommand per role. Each role runs until SIGINT or SIGTERM, then
//! shuts down cleanly (a worker first finishes its running tasks; a second signal stops it
//! at once).

use anyhow::Context;

/// mimalloc rather than the system's allocator: glibc's stalls the hot path after the
/// large frees of a log purge (measured in docs/benchmarks.md, "mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use dtc::cli::{Cli, Command, CoordinatorArgs, LocalArgs, RouterArgs, SecretsCommand, WorkerArgs};
use dtc::local::{LocalCluster, LocalSpec};
use dtc_proto::credentials::Credentials;
use dtc_sdk::Worker;
use dtc_server::coordinator::{Coordinator, CoordinatorConfig, RaftTiming};
use dtc_server::net::Limits;
use dtc_server::router::http::HttpConfig;
use dtc_server::router::{Router, RouterConfig};
use dtc_server::shard::Retention;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args = match dtc::config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("dtc: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    // Only the long-running roles log at info; every command that asks and answers (and
    // any command added later) is quiet unless RUST_LOG says otherwise.
    let quiet = !matches!(
        &cli.command,
        Command::Coordinator(_) | Command::Worker(_) | Command::Router(_)
    ) && !matches!(&cli.command, Command::Local(l) if !l.bench);
    // openraft logs an unreachable peer (routine while a replica restarts) as an error;
    // dtc reports what matters itself. Other libraries speak at warn: under load raft-log
    // alone would write hundreds of info lines a second. RUST_LOG overrides (e.g.
    // RUST_LOG=info,openraft=info brings everything back).
    init_logs(if quiet {
        "warn,openraft=off"
    } else {
        "warn,dtc=info,dtc_server=info,dtc_sdk=info,dtc_proto=info,openraft=off"
    });
    raise_open_files_limit();
    let threads = match &cli.command {
        Command::Local(l) => l.threads.max(1),
        _ => 1,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let result = runtime
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dtc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: a common soft limit of 1,024
/// would make `accept` fail (EMFILE) long before `--max-connections` is reached. A limit
/// that cannot be raised is only logged: the process still runs, with fewer connections.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Coordinator(args) => coordinator(args).await,
        Command::Worker(args) => worker(args).await,
        Command::Router(args) => router(args).await,
        Command::Client(args) => {
            let addr = SocketAddr::new(args.ip, args.port);
            let credentials = args.security.credentials()?;
            let report = dtc::bench::run(addr, &args.bench, credentials).await?;
            dtc::bench::print(&report, &args.bench, &addr.to_string())?;
            anyhow::ensure!(
                report.tasks_failed == 0,
                "{} tasks failed",
                report.tasks_failed
            );
            Ok(())
        }
        Command::Local(args) => local(args).await,
        Command::Submit(args) => {
            let view = dtc::task_cmd::submit(args).await?;
            anyhow::ensure!(view.state != dtc_sdk::TaskState::Failed, "the task failed");
            Ok(())
        }
        Command::Get(args) => dtc::task_cmd::get(args).await.map(drop),
        Command::Cancel(args) => dtc::task_cmd::cancel(args).await.map(drop),
        Command::Retry(args) => dtc::task_cmd::retry(args).await.map(drop),
        Command::Tasks(args) => dtc::task_cmd::list(args).await,
        Command::Purge(args) => dtc::task_cmd::purge(args).await,
        Command::Queue(args) => dtc::task_cmd::queue(args).await,
        Command::Schedule(args) => dtc::schedule_cmd::run(args).await,
        Command::Status(args) => dtc::status_cmd::run(args).await,
        Command::Configure(args) => dtc::status_cmd::configure(args).await,
        Command::Top(args) => dtc::top::run(args, shutdown_signal()).await,
        Command::Secrets(SecretsCommand::Init(args)) => {
            let made = dtc::secrets::init(&args)?;
            let dir = made.dir.display();
            println!(
                "made the credentials of cluster {:?} in {dir}, the members' certificate valid for {}",
                args.cluster,
                made.hosts.join(", ")
            );
            println!(
                "start replicas and routers with --secrets {dir} (copied without ca.key), e.g."
            );
            println!(
                "  dtc coordinator --secrets {dir} --bind 0.0.0.0 -p 5000 --peer HOST2:5000 --peer HOST3:5000"
            );
            println!("give workers only ca.pem and worker.toml:");
            println!(
                "  dtc worker --tls-ca {dir}/ca.pem --token-file {dir}/worker.toml -s HOST1:5000,HOST2:5000,HOST3:5000"
            );
            println!("and client programs only ca.pem and client.toml:");
            println!(
                "  dtc submit --tls-ca {dir}/ca.pem --token-file {dir}/client.toml --ip HOST wordcount \"a b c\""
            );
            println!("keep {dir}/ca.key offline");
            Ok(())
        }
    }
}

/// A token cancelled on the first SIGINT or SIGTERM; a second one exits the process.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down (send the signal again to stop at once)");
        t.cancel();
        wait_signal().await;
        eprintln!("dtc: second signal, exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    tokio::signal::ctrl_c().await.ok();
}

/// Installs the process's metrics recorder when metrics are asked for (`serve`, or
/// `recorder` for a router whose HTTP API serves them), keeps it bounded until `cancel`
/// fires, and serves `/metrics` on `serve`, returning the address it serves on. Runs before
/// any component starts, so that their series register with the recorder.
async fn metrics(
    serve: Option<SocketAddr>,
    recorder: bool,
    insecure: bool,
    credentials: &Arc<Credentials>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    if serve.is_none() && !recorder {
        return Ok(None);
    }
    // A member (coordinator, router) serves them inside TLS for the admin token; anyone else
    // serves plain HTTP, off loopback only with --insecure.
    let member = credentials.tls.as_ref().is_some_and(|t| t.is_member());
    let credentials = if member {
        Arc::clone(credentials)
    } else {
        Arc::new(Credentials::plain())
    };
    if let Some(addr) = serve {
        dtc_server::net::check_exposure("metrics", addr, &credentials, insecure)?;
    }
    dtc_server::telemetry::install()?;
    tokio::spawn(dtc_server::telemetry::upkeep(cancel.clone()));
    if let Some(addr) = serve {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("serving metrics on {addr} (--metrics)"))?;
        let addr = listener.local_addr()?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = dtc_server::telemetry::serve(listener, credentials, cancel).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        return Ok(Some(addr));
    }
    Ok(None)
}

/// Tells where the metrics are served (after the component's own first line, which scripts
/// and tests read for its address).
fn print_metrics(addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        println!("metrics on http://{addr}/metrics");
    }
}

async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let credentials = args.net.security.credentials()?;
    let shutdown = shutdown_signal();
    let metrics_addr = metrics(
        args.metrics,
        false,
        args.net.insecure,
        &credentials,
        &shutdown,
    )
    .await?;
    let listen = SocketAddr::new(args.net.bind, args.port);
    let (id, mut replicas) =
        dtc::membership::resolve(args.advertise.unwrap_or(listen), args.id, &args.peer)
            .map_err(|e| anyhow::anyhow!("the shard's replicas: {e}"))?;
    if args.peer.is_empty() && args.advertise.is_none() {
        // A shard of one: its address is the one it binds (port 0 picks one).
        replicas.clear();
    }
    let data_dir = if args.in_memory {
        None
    } else {
        Some(
            args.data_dir
                .unwrap_or_else(|| std::path::Path::new("data").join(id.to_string())),
        )
    };
    let config = CoordinatorConfig {
        listen,
        id,
        replicas,
        data_dir,
        raft: RaftTiming {
            heartbeat: Duration::from_millis(args.raft_heartbeat_ms),
            election_timeout: (
                Duration::from_millis(args.election_timeout_ms),
                Duration::from_millis(args.election_timeout_ms.saturating_mul(2)),
            ),
            snapshot_every: args.snapshot_every,
            keep_before_snapshot: args.snapshot_every.min(1000),
        },
        heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms),
        entries_in_flight: if args.in_memory {
            dtc::local::IN_MEMORY_ENTRIES_IN_FLIGHT
        } else {
            1
        },
        commit_linger: if args.in_memory {
            Duration::ZERO
        } else {
            Duration::from_millis(args.commit_linger_ms)
        },
        retention: Retention {
            result_ttl_ms: args.result_ttl_s.saturating_mul(1000),
            max_results: args.max_results,
            max_queued: args.max_queue,
            failed_ttl_ms: args.failed_ttl_s.saturating_mul(1000),
            max_failed: args.max_failed,
        },
        limits: limits(&args.net),
        credentials: Arc::clone(&credentials),
        insecure: args.net.insecure,
        max_worker_slots: args.max_worker_slots,
        max_payload: args.max_payload,
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::bind(config).await?;
    println!("coordinator listening on {}", coordinator.local_addr()?);
    print_metrics(metrics_addr);
    coordinator.run(shutdown).await?;
    Ok(())
}

/// The connection bounds a server's flags set.
fn limits(net: &dtc::cli::NetArgs) -> Limits {
    Limits {
        max_frame: net.max_frame,
        max_connections: net.max_connections,
        max_connections_per_ip: net.max_connections_per_ip,
        max_inflight_bytes: net.max_inflight_bytes,
        max_waits: net.max_waits,
        idle_timeout: Duration::from_secs(net.idle_timeout_s.max(1)),
        ..Limits::default()
    }
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let credentials = args.security.credentials()?;
    let addrs = match args.port {
        Some(port) => vec![SocketAddr::new(args.ip, port)],
        None if !args.shard.is_empty() => args.shard,
        None => {
            anyhow::bail!("say which coordinator to serve: -p PORT (on --ip) or -s ADDR[,ADDR…]")
        }
    };
    let mut builder = Worker::builder()
        .builtins()
        .slots(args.slots)
        .queues(args.queues.iter().filter(|q| !q.is_empty()))
        .heartbeat(Duration::from_millis(args.heartbeat_ms.max(1)))
        .max_frame(args.max_frame)
        .credentials(Arc::clone(&credentials));
    if let Some(prefetch) = args.prefetch {
        builder = builder.prefetch(prefetch);
    }
    if let Some(name) = args.name {
        builder = builder.name(name);
    }
    let shutdown = shutdown_signal();
    let metrics_addr = metrics(args.metrics, false, args.insecure, &credentials, &shutdown).await?;
    let worker = builder.build()?;
    println!(
        "worker with {} slots serving {:?}, queues {}",
        args.slots,
        addrs,
        args.queues.join(",")
    );
    print_metrics(metrics_addr);
    worker.run(addrs, shutdown).await?;
    Ok(())
}

async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let credentials = args.net.security.credentials()?;
    let shutdown = shutdown_signal();
    let metrics_addr = metrics(
        args.metrics,
        args.http.0.is_some(),
        args.net.insecure,
        &credentials,
        &shutdown,
    )
    .await?;
    let config = RouterConfig {
        listen: SocketAddr::new(args.net.bind, args.port),
        shards: args.shards,
        limits: limits(&args.net),
        credentials: Arc::clone(&credentials),
        insecure: args.net.insecure,
        http: args.http.0.map(|listen| HttpConfig {
            listen,
            max_body: args.http_max_body,
            max_waits: dtc_server::router::http::MAX_WAITS,
        }),
    };
    let router = Router::bind(config).await?;
    println!("router listening on {}", router.local_addr()?);
    print_metrics(metrics_addr);
    if let Some(http) = router.http_addr() {
        let scheme = if credentials.is_secure() {
            "https"
        } else {
            "http"
        };
        println!("http: {scheme}://{http}/ (API under /v1, metrics at /metrics)");
    }
    router.run(shutdown).await;
    Ok(())
}

async fn local(args: LocalArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let http = match args.http {
        Some(listen) => listen.0,
        None if args.bench => None,
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
    };
    metrics(None, http.is_some(), false, &Default::default(), &shutdown).await?;
    let spec = LocalSpec {
        shards: args.shards,
        workers: args.workers,
        slots: args.slots,
        router_port: args.port.unwrap_or(if args.bench { 0 } else { 6000 }),
        replicas: args.replicas,
        data_dir: args.data_dir.clone(),
        in_memory: args.in_memory,
        http: http.map(|listen| HttpConfig {
            listen,
            max_body: args.http_max_body,
            max_waits: dtc_server::router::http::MAX_WAITS,
        }),
        secure: args.secure,
    };
    let cluster = LocalCluster::start(&spec).await?;
    if !args.bench {
        println!(
            "dtc local: {} shards × {} replicas, {} workers × {} slots per shard",
            spec.shards, spec.replicas, spec.workers, spec.slots
        );
        println!("router: {}", cluster.router);
        if let Some(http) = cluster.http {
            let scheme = if cluster.credentials.is_secure() {
                "https"
            } else {
                "http"
            };
            println!("http: {scheme}://{http}/ (dashboard; API under /v1, metrics at /metrics)");
        }
        for (i, c) in cluster.coordinators.iter().enumerate() {
            let list: Vec<String> = c.iter().map(ToString::to_string).collect();
            println!("shard {i} replicas: {}", list.join(","));
        }
        match &cluster.data_dir {
            Some((dir, true)) => println!("data: {} (removed at exit)", dir.display()),
            Some((dir, false)) => println!("data: {}", dir.display()),
            None => println!("data: in memory"),
        }
        if let Some(secrets) = &cluster.secrets_dir {
            let port = cluster.router.port();
            println!(
                "secure: TLS and role tokens on every connection; credentials in {}",
                secrets.display()
            );
            println!(
                "  connect with: dtc submit --secrets {} -p {port} wordcount \"a b c\"",
                secrets.display()
            );
            println!(
                "  dtc status --secrets {} --router {}",
                secrets.display(),
                cluster.router
            );
        }
        println!("press Ctrl-C to stop");
        shutdown.cancelled().await;
        cluster.stop().await;
        return Ok(());
    }
    if !args.bench_args.json {
        eprintln!(
            "dtc local: {} shards × {} replicas × {} workers × {} slots, router {}; running {} with {} clients × {} tasks",
            spec.shards,
            spec.replicas,
            spec.workers,
            spec.slots,
            cluster.router,
            args.bench_args.workload,
            args.bench_args.clients,
            args.bench_args.tasks
        );
    }
    let target = format!(
        "dtc local ({} shards × {} replicas × {} workers × {} slots)",
        spec.shards, spec.replicas, spec.workers, spec.slots
    );
    let report = tokio::select! {
        r = dtc::bench::run(cluster.router, &args.bench_args, Arc::clone(&cluster.credentials)) => r,
        () = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    cluster.stop().await;
    let report = report?;
    dtc::bench::print(&report, &args.bench_args, &target)?;
    anyhow::ensure!(
        report.tasks_failed == 0,
        "{} tasks failed",
        report.tasks_failed
    );
    Ok(())
}

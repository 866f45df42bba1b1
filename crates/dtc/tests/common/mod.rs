//! Helpers shared by the integration tests: starting real `dtc` processes on loopback
//! (one process, or a shard of replicas) and finding the ports they bound.

#![allow(dead_code)]

pub mod secured;

use anyhow::{Context, bail};
use dtc_proto::ask::ask_status;
use dtc_proto::status::{AdminResponse, ClusterStatus};
use dtc_proto::transport::Tcp;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The log filter of the processes a test starts: `DTC_TEST_LOG`, or warnings only.
fn test_log() -> String {
    std::env::var("DTC_TEST_LOG").unwrap_or_else(|_| "warn,openraft=off".into())
}

/// The rig most tests share: one coordinator process (any free port, a data directory of
/// its own), a client of it, and the in-test workers started through it, which stop when
/// the rig is dropped.
pub struct Rig {
    pub coord: Proc,
    pub client: dtc_sdk::Client,
    pub stop: tokio_util::sync::CancellationToken,
}

impl Rig {
    /// Starts the coordinator (with `extra` flags) and connects a client.
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["-p", "0"];
        args.extend_from_slice(extra);
        let coord = Proc::coordinator(&args)?;
        let client = dtc_sdk::Client::connect(coord.addr()?).await?;
        Ok(Self {
            coord,
            client,
            stop: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// The coordinator's address.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.coord.addr()
    }

    /// The coordinator's port, as the CLI's `-p` takes it.
    pub fn port(&self) -> anyhow::Result<String> {
        Ok(self.addr()?.port().to_string())
    }

    /// Starts a `dtc worker` process of the coordinator with `args` (`["-w", "2"]`).
    pub fn worker_process(&self, args: &[&str]) -> anyhow::Result<Proc> {
        let port = self.port()?;
        let mut all = vec!["worker", "-p", &port];
        all.extend_from_slice(args);
        Proc::start(&all)
    }

    /// Runs `worker` in this process against the coordinator until the rig stops.
    pub fn run(&self, worker: dtc_sdk::Worker) -> anyhow::Result<()> {
        tokio::spawn(worker.run(vec![self.addr()?], self.stop.clone()));
        Ok(())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name starts with `label`.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "dtc-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A running `dtc` process, killed (SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    /// The address it printed (servers) or `None`.
    pub addr: Option<SocketAddr>,
    /// A data directory that lives as long as the process.
    _dir: Option<TempDir>,
}

impl Proc {
    /// Starts `dtc ARGS…`; for a server, waits for its "listening on ADDR" line.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        Ok(Self::start_lines(args, 1)?.0)
    }

    /// Starts `dtc ARGS…` and returns the first `lines` lines it prints (its address is
    /// the last word of the first).
    pub fn start_lines(args: &[&str], lines: usize) -> anyhow::Result<(Self, Vec<String>)> {
        Self::start_with_stderr(args, lines, Stdio::inherit(), Some(&test_log()), None)
    }

    /// Starts `dtc ARGS…` as [`Proc::start`] does, in the working directory `dir`.
    pub fn start_in(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let stderr = Stdio::inherit();
        Ok(Self::start_with_stderr(args, 1, stderr, Some(&test_log()), Some(dir))?.0)
    }

    /// Starts `dtc ARGS…` as [`Proc::start`] does, with its log (standard error, at the
    /// binary's own default filter) written to `log`.
    pub fn start_logging(args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log)?;
        Ok(Self::start_with_stderr(args, 1, Stdio::from(file), None, None)?.0)
    }

    /// Starts `dtc ARGS…` with `RUST_LOG` set to `filter` (or unset: the binary's own
    /// default), standard error to `stderr`, in `cwd` (or this process's directory), and
    /// reads its first `lines` lines.
    fn start_with_stderr(
        args: &[&str],
        lines: usize,
        stderr: Stdio,
        filter: Option<&str>,
        cwd: Option<&Path>,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dtc"));
        command.args(args).stdout(Stdio::piped()).stderr(stderr);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        match filter {
            Some(f) => command.env("RUST_LOG", f),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command.spawn().context("starting dtc")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut printed = Vec::new();
        for _ in 0..lines.max(1) {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                break;
            }
            printed.push(line.trim().to_owned());
        }
        // Keep reading, so that nothing the process prints later meets a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = printed
            .first()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|a| a.parse().ok());
        let proc = Self {
            child,
            addr,
            _dir: None,
        };
        Ok((proc, printed))
    }

    /// Starts `dtc coordinator ARGS…` with a data directory of its own.
    pub fn coordinator(args: &[&str]) -> anyhow::Result<Self> {
        let dir = TempDir::new("coordinator")?;
        let data = dir.arg();
        let mut all = vec!["coordinator", "--data-dir", &data];
        all.extend_from_slice(args);
        let mut p = Self::start(&all)?;
        p._dir = Some(dir);
        Ok(p)
    }

    /// The address a server printed.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        self.addr.context("this process printed no address")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, …) with the `kill` command.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits for the process to exit and returns whether it exited successfully.
    pub fn wait_success(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.wait()?.success())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("VmRSS:") {
                return Ok(rest.trim().trim_end_matches("kB").trim().parse()?);
            }
        }
        bail!("no VmRSS line")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// One shard's replica processes and addresses.
pub struct Shard {
    /// The replicas' addresses.
    pub addrs: Vec<SocketAddr>,
    /// The replicas' processes, in the order of `addrs`.
    pub procs: Vec<Proc>,
    /// Their data directories.
    pub dirs: Vec<TempDir>,
}

impl Shard {
    /// Starts `n` replicas on free ports, each naming the others as peers.
    pub fn start(n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        let dirs = (0..n)
            .map(|_| TempDir::new("replica"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::start_in(dirs, extra)
    }

    /// Starts one replica per data directory in `dirs`, on free ports.
    pub fn start_in(dirs: Vec<TempDir>, extra: &[&str]) -> anyhow::Result<Self> {
        let mut addrs = Vec::new();
        for _ in 0..dirs.len() {
            addrs.push(SocketAddr::from(([127, 0, 0, 1], free_port()?)));
        }
        let mut shard = Self {
            addrs,
            procs: Vec::new(),
            dirs,
        };
        for i in 0..shard.dirs.len() {
            let p = shard.spawn(i, extra)?;
            shard.procs.push(p);
        }
        Ok(shard)
    }

    /// Starts replica `i` (again) on its port and data directory.
    pub fn spawn(&self, i: usize, extra: &[&str]) -> anyhow::Result<Proc> {
        let port = self.addrs[i].port().to_string();
        let data = self.dirs[i].arg();
        let peers: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.to_string())
            .collect();
        let mut args = vec!["coordinator", "-p", &port, "--data-dir", &data];
        for p in &peers {
            args.push("--peer");
            args.push(p);
        }
        args.extend_from_slice(extra);
        Proc::start(&args)
    }

    /// SIGKILLs the replica at `addr` (say, the leader).
    pub fn kill9(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let i = self
            .addrs
            .iter()
            .position(|a| *a == addr)
            .with_context(|| format!("{addr} is not a replica of this shard"))?;
        self.procs[i].kill9()
    }

    /// The replica list as `-s` takes it.
    pub fn list(&self) -> String {
        let v: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        v.join(",")
    }
}

/// A tmpfs of a given size mounted on a directory (the machine's own size-limited
/// filesystem, to fill up); unmounted when dropped. Needs root, as CI and the developers'
/// machines run.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `dir`.
    pub fn mount(dir: &Path, bytes: u64) -> anyhow::Result<Self> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .context("running mount")?;
        anyhow::ensure!(
            status.success(),
            "mounting a tmpfs on {} failed",
            dir.display()
        );
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        Command::new("umount").arg("-l").arg(&self.0).status().ok();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Bounds a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(90);

/// Sends this test's logs to the test output when RUST_LOG is set.
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(LogTime)
        .with_test_writer()
        .try_init()
        .ok();
}

/// A log line's time: in a simulation the simulated time since its start (what its
/// events are measured in), elsewhere the wall clock.
struct LogTime;

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "sim {t:?}"),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Runs a whole test body within `TEST_LIMIT`, so that a hang fails instead of blocking CI.
pub async fn bounded<T>(
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .context("the test ran past its time limit")?
}

/// The cluster's status through the router.
pub async fn cluster_status(router: SocketAddr) -> anyhow::Result<ClusterStatus> {
    match ask_status(&Tcp, router, "test").await? {
        AdminResponse::Cluster(c) => Ok(c),
        other => anyhow::bail!("{router} answered {other:?}"),
    }
}

/// Waits until shard `index` has a leader with a term above `above`; returns its address
/// and term.
pub async fn leader_of(
    router: SocketAddr,
    index: usize,
    above: u64,
) -> anyhow::Result<(SocketAddr, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = cluster_status(router).await
            && let Some(l) = c.shards.get(index).and_then(|s| s.leader())
            && l.term > above
        {
            return Ok((l.addr.parse()?, l.term));
        }
        anyhow::ensure!(Instant::now() < deadline, "shard {index} elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `dtc ARGS…` to its end: its standard output, or an error with its standard error
/// if it failed.
pub fn dtc_ok(args: &[&str]) -> anyhow::Result<String> {
    dtc_ok_in(Path::new("."), args)
}

/// Runs `dtc ARGS…` to its end in the working directory `dir`, as [`dtc_ok`] does.
pub fn dtc_ok_in(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_dtc"))
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "dtc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Raises this test process's soft limit on open files to its hard limit, for tests that
/// hold many sockets at once.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Opens `n` TCP connections to `to` from the loopback address `from` (127.0.0.2, …) and
/// keeps them open, sending nothing; a connection the server closes at once is counted
/// all the same (the kernel accepts before the server decides).
pub async fn idle_sockets(
    from: std::net::IpAddr,
    to: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<tokio::net::TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        held.push(socket.connect(to).await?);
    }
    Ok(held)
}

/// TCP from one loopback address (127.0.0.2, …), standing for another host: the SDK's
/// transport for a client that must appear to come from elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct FromAddress(pub std::net::IpAddr);

impl dtc_proto::transport::Transport for FromAddress {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<(Self::Read, Self::Write)> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.0, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true).ok();
        Ok(stream.into_split())
    }
}

/// `dtc schedule add NAME KIND PAYLOAD` through the router on `port`: every second, every
/// missed tick caught up, overlaps allowed. What the command printed.
pub fn add_every_second(
    port: &str,
    name: &str,
    kind: &str,
    payload: &str,
) -> anyhow::Result<String> {
    dtc_ok(&[
        "schedule",
        "add",
        name,
        kind,
        payload,
        "--cron",
        "* * * * * *",
        "--catch-up",
        "all",
        "--overlap",
        "allow",
        "-p",
        port,
    ])
}

/// The schedule `name` as the router finds it.
pub async fn schedule_status(
    router: SocketAddr,
    name: &str,
) -> anyhow::Result<dtc_proto::schedule::ScheduleStatus> {
    let all = dtc_proto::ask::ask_all_schedules(&Tcp, &[router], "test").await?;
    all.into_iter()
        .find(|s| s.spec.name == name)
        .ok_or_else(|| anyhow::anyhow!("no schedule {name}"))
}

/// Waits (at most `TEST_LIMIT`) until `check` answers true, asking every 5 ms; an error
/// from `check` ends the wait with it.
pub async fn until<F, Fut>(mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    tokio::time::timeout(TEST_LIMIT, async {
        loop {
            if check().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("condition not met in time")?
}

/// Waits until the schedule has handled a tick at or after `tick_ms`.
pub async fn until_tick(
    router: SocketAddr,
    name: &str,
    tick_ms: u64,
) -> anyhow::Result<dtc_proto::schedule::ScheduleStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = schedule_status(router, name).await
            && s.last_tick_ms >= tick_ms
        {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} never reached tick {tick_ms}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

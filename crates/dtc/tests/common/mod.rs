//! Helpers shared by the integration tests: starting real `dtc` processes on loopback and
//! finding the ports they bound.

#![allow(dead_code)]

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `dtc` process, killed (SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    /// The address it printed (servers) or `None`.
    pub addr: Option<SocketAddr>,
}

impl Proc {
    /// Starts `dtc ARGS…`; for a server, waits for its "listening on ADDR" line.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dtc")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        // Keep reading, so that nothing the process prints later meets a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = first.trim().rsplit(' ').next().and_then(|a| a.parse().ok());
        Ok(Self { child, addr })
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
        .with_test_writer()
        .try_init()
        .ok();
}

/// Runs a whole test body within `TEST_LIMIT`, so that a hang fails instead of blocking CI.
pub async fn bounded<T>(
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(TEST_LIMIT, body)
        .await
        .context("the test ran past its time limit")?
}

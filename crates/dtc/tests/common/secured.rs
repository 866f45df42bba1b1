//! A secured cluster of real processes for the tests: `dtc secrets init`, a shard of three
//! replicas, a worker and a router, all with `--secrets`; and HTTPS requests to its API.

use super::{Proc, Shard, TempDir};
use anyhow::Context;
use dtc_proto::ask::ask_status;
use dtc_proto::credentials::{CA_CERT, CredentialSources, Credentials};
use dtc_proto::message::ShardId;
use dtc_proto::status::{AdminResponse, ReplicaStatus};
use dtc_proto::tls::{Tls, TlsFiles};
use dtc_proto::token::RoleTokens;
use dtc_proto::transport::{Secure, Tcp, Transport};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `dtc secrets init DIR`, as a user runs it.
pub fn init_secrets() -> anyhow::Result<(TempDir, PathBuf)> {
    let dir = TempDir::new("secrets")?;
    let secrets = dir.path().join("secrets");
    let out = Command::new(env!("CARGO_BIN_EXE_dtc"))
        .args(["secrets", "init"])
        .arg(&secrets)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "dtc secrets init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((dir, secrets))
}

/// A shard of three secured replicas with a worker, and a secured router in front.
pub struct Secured {
    /// The secrets directory.
    pub secrets: PathBuf,
    /// The replicas.
    pub shard: Shard,
    /// The router.
    pub router: Proc,
    /// The router's HTTP API, when served.
    pub http: Option<SocketAddr>,
    _worker: Proc,
    _dir: TempDir,
}

impl Secured {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// With `http`, the router serves its HTTP API on a free port.
    pub fn start_with(http: bool) -> anyhow::Result<Self> {
        let (dir, secrets) = init_secrets()?;
        let s = secrets.display().to_string();
        let shard = Shard::start(3, &["--secrets", &s])?;
        let list = shard.list();
        let worker = Proc::start(&["worker", "-s", &list, "-w", "2", "--secrets", &s])?;
        let listen = if http { "127.0.0.1:0" } else { "off" };
        let args = [
            "router",
            "-p",
            "0",
            "--http",
            listen,
            "-s",
            &list,
            "--secrets",
            &s,
        ];
        let (router, lines) = Proc::start_lines(&args, if http { 2 } else { 1 })?;
        // "http: https://ADDR/ (…)"
        let http = lines
            .get(1)
            .and_then(|l| l.split("https://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok());
        Ok(Self {
            secrets,
            shard,
            router,
            http,
            _worker: worker,
            _dir: dir,
        })
    }

    /// The cluster's full credentials (every token, the members' certificate).
    pub fn full(&self) -> anyhow::Result<Arc<Credentials>> {
        let sources = CredentialSources {
            secrets: Some(self.secrets.clone()),
            ..CredentialSources::default()
        };
        Ok(Arc::new(Credentials::load(&sources)?))
    }

    /// TLS with the cluster's CA but no certificate, and these tokens.
    pub fn ca_only(&self, tokens: RoleTokens) -> anyhow::Result<Arc<Credentials>> {
        let files = TlsFiles {
            ca: self.secrets.join(CA_CERT),
            cert: None,
            key: None,
        };
        Ok(Arc::new(Credentials {
            cluster: self.full()?.cluster.clone(),
            tls: Some(Tls::load(&files, None)?),
            tokens,
        }))
    }

    /// The shard's identity, as replica 0 keeps it in its data directory.
    pub fn shard_id(&self) -> anyhow::Result<ShardId> {
        let text = std::fs::read_to_string(self.shard.dirs[0].path().join("SHARD"))?;
        Ok(text.parse()?)
    }

    /// The leader's id and term, once one leads and every replica is in its term.
    pub async fn settled_leader(&self) -> anyhow::Result<(u64, u64)> {
        use dtc_proto::status::RaftRole;
        loop {
            let replicas = self.replicas().await?;
            if let Some(l) = replicas.iter().find(|r| r.role == RaftRole::Leader)
                && replicas
                    .iter()
                    .all(|r| r.term == l.term && r.leader == Some(l.id))
            {
                return Ok((l.id, l.term));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Every replica's status, asked with the admin token.
    pub async fn replicas(&self) -> anyhow::Result<Vec<ReplicaStatus>> {
        let transport = Secure::new(Tcp, self.full()?);
        let mut all = Vec::new();
        for &addr in &self.shard.addrs {
            match ask_status(&transport, addr, "security test").await? {
                AdminResponse::Replica(r) => all.push(r),
                other => anyhow::bail!("{addr} answered {other:?}"),
            }
        }
        Ok(all)
    }
}

/// One HTTPS request to the router's API (trusting the cluster's CA); its status and body.
pub async fn https(
    c: &Secured,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let addr = c.http.context("the router serves no HTTP")?;
    let tls = c
        .ca_only(RoleTokens::default())?
        .tls
        .clone()
        .context("no TLS")?;
    let (read, write) = Tcp.connect(addr).await?;
    let (mut read, mut write) = tls.connect(addr, read, write).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    write.write_all(request.as_bytes()).await?;
    write.flush().await?;
    let mut answer = Vec::new();
    read.read_to_end(&mut answer).await.ok();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

//! The README's "secured cluster on three machines, step by step", followed as written on
//! one machine: the three hosts are the loopback addresses 127.0.0.1–3 (each process binds
//! its host's address where the README binds 0.0.0.0), and every role runs in a directory
//! of its own holding only the files the README copies to its machine.

mod common;

use common::{Proc, TempDir, dtc_ok_in};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

/// A port free on all three hosts a moment ago.
fn port_free_on_every_host() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = common::free_port()?;
        let free =
            (1..=3u8).all(|h| TcpListener::bind(SocketAddr::from(([127, 0, 0, h], port))).is_ok());
        if free {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free on 127.0.0.1-3")
}

/// Copies `files` of `from` into a new directory `to`.
fn copy(from: &Path, to: &Path, files: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for f in files {
        std::fs::copy(from.join(f), to.join(f))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_secured_three_machine_recipe_works_as_written() -> anyhow::Result<()> {
    common::bounded(async {
        let root = TempDir::new("recipe")?;
        let root = root.path();
        // 1. The credentials, for every address that will be dialled.
        dtc_ok_in(
            root,
            &[
                "secrets",
                "init",
                "./secrets",
                "--cluster",
                "prod",
                "--host",
                "127.0.0.1",
                "--host",
                "127.0.0.2",
                "--host",
                "127.0.0.3",
            ],
        )?;
        let made = root.join("secrets");
        // 2. Each machine's files: the replicas and the router get secrets/ without ca.key,
        // a worker ca.pem and worker.toml, a client ca.pem and client.toml.
        let member_files = ["ca.pem", "node.pem", "node.key", "secrets.toml"];
        for host in ["host1", "host2", "host3", "router"] {
            copy(&made, &root.join(host).join("secrets"), &member_files)?;
        }
        copy(&made, &root.join("worker"), &["ca.pem", "worker.toml"])?;
        copy(&made, &root.join("client"), &["ca.pem", "client.toml"])?;
        // 3. One replica per host, each advertising its address and naming the other two.
        let port = port_free_on_every_host()?;
        let addr = |h: u8| format!("127.0.0.{h}:{port}");
        let port_arg = port.to_string();
        let mut replicas = Vec::new();
        for h in 1..=3u8 {
            let (me, others): (Vec<u8>, Vec<u8>) = (1..=3).partition(|o| *o == h);
            let bind = format!("127.0.0.{}", me[0]);
            let advertise = addr(h);
            let (peer_a, peer_b) = (addr(others[0]), addr(others[1]));
            let args = [
                "coordinator",
                "--secrets",
                "./secrets",
                "--bind",
                &bind,
                "-p",
                &port_arg,
                "--advertise",
                &advertise,
                "--peer",
                &peer_a,
                "--peer",
                &peer_b,
            ];
            replicas.push(Proc::start_in(&root.join(format!("host{h}")), &args)?);
        }
        let shard = format!("{},{},{}", addr(1), addr(2), addr(3));
        // 4. A worker with the CA's certificate and worker.toml alone.
        let _worker = Proc::start_in(
            &root.join("worker"),
            &[
                "worker",
                "--tls-ca",
                "ca.pem",
                "--token-file",
                "worker.toml",
                "-s",
                &shard,
            ],
        )?;
        // 5. A router, with its HTTP API.
        let router_port = common::free_port()?.to_string();
        let http = format!("127.0.0.1:{}", common::free_port()?);
        let _router = Proc::start_in(
            &root.join("router"),
            &[
                "router",
                "--secrets",
                "./secrets",
                "--bind",
                "127.0.0.1",
                "-p",
                &router_port,
                "--http",
                &http,
                "-s",
                &shard,
            ],
        )?;
        // 6. A client with the CA's certificate and client.toml alone; an operator's status.
        let counted = dtc_ok_in(
            &root.join("client"),
            &[
                "submit",
                "--tls-ca",
                "ca.pem",
                "--token-file",
                "client.toml",
                "--ip",
                "127.0.0.1",
                "-p",
                &router_port,
                "--json",
                "wordcount",
                "a b c",
            ],
        )?;
        let view: serde_json::Value = serde_json::from_str(&counted)?;
        assert_eq!(view["state"], "succeeded", "{counted}");
        assert_eq!(view["result"], "3", "{counted}");
        let router = format!("127.0.0.1:{router_port}");
        let status = dtc_ok_in(
            &root.join("router"),
            &[
                "status",
                "--secrets",
                "./secrets",
                "--router",
                &router,
                "--json",
            ],
        )?;
        let status: serde_json::Value = serde_json::from_str(&status)?;
        let listed = &status["Cluster"]["shards"][0]["replicas"];
        assert_eq!(listed.as_array().map(Vec::len), Some(3), "{status}");
        // Without the client's files the same submit is refused.
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_dtc"))
            .args([
                "submit",
                "--ip",
                "127.0.0.1",
                "-p",
                &router_port,
                "wordcount",
                "a",
            ])
            .output()?;
        assert!(!refused.status.success());
        drop(replicas);
        Ok(())
    })
    .await
}

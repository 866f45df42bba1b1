//! The transport seam: a coordinator, a router, a worker and a client wired over an
//! in-memory network (tokio duplex pipes) instead of TCP — the same code paths a network
//! simulator drives.

mod common;

use dtc_proto::transport::{Listener, Transport};
use dtc_sdk::{Client, ClientConfig, Outcome, TaskSpec, Worker};
use dtc_server::coordinator::{Coordinator, CoordinatorConfig};
use dtc_server::router::{Router, RouterConfig};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Conn = (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>, SocketAddr);

/// A network in memory: listeners register an address; dialing it hands them a pipe.
#[derive(Clone, Default)]
struct MemNet {
    listeners: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Conn>>>>,
    next_port: Arc<Mutex<u16>>,
}

struct MemListener {
    addr: SocketAddr,
    incoming: mpsc::Receiver<Conn>,
}

impl MemNet {
    fn listen(&self, addr: SocketAddr) -> MemListener {
        let (tx, incoming) = mpsc::channel(64);
        if let Ok(mut map) = self.listeners.lock() {
            map.insert(addr, tx);
        }
        MemListener { addr, incoming }
    }
}

impl Transport for MemNet {
    type Read = ReadHalf<DuplexStream>;
    type Write = WriteHalf<DuplexStream>;

    async fn connect(&self, addr: SocketAddr) -> io::Result<(Self::Read, Self::Write)> {
        let target = self
            .listeners
            .lock()
            .ok()
            .and_then(|m| m.get(&addr).cloned());
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "nobody listens there")
        })?;
        let port = match self.next_port.lock() {
            Ok(mut p) => {
                *p += 1;
                *p
            }
            Err(_) => 0,
        };
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (far_read, far_write) = tokio::io::split(far);
        let from = SocketAddr::from(([127, 0, 0, 1], 40_000 + port));
        target
            .send((far_read, far_write, from))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionRefused, "listener gone"))?;
        Ok(tokio::io::split(near))
    }
}

impl Listener for MemListener {
    type Read = ReadHalf<DuplexStream>;
    type Write = WriteHalf<DuplexStream>;

    async fn accept(&mut self) -> io::Result<Conn> {
        self.incoming
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "network gone"))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[tokio::test]
async fn the_pipeline_runs_over_an_in_memory_network() -> anyhow::Result<()> {
    common::bounded(async {
        let net = MemNet::default();
        let cancel = CancellationToken::new();
        let coord_addr = SocketAddr::from(([127, 0, 0, 1], 5000));
        let router_addr = SocketAddr::from(([127, 0, 0, 1], 6000));
        let coordinator = Coordinator::start(
            net.listen(coord_addr),
            net.clone(),
            CoordinatorConfig::default(),
        )
        .await?;
        tokio::spawn(coordinator.run(cancel.clone()));
        let config = RouterConfig {
            listen: router_addr,
            shards: vec![vec![coord_addr]],
            limits: Default::default(),
            http: None,
            credentials: Default::default(),
            insecure: false,
        };
        let router = Router::with_transport(net.listen(router_addr), net.clone(), config)?;
        tokio::spawn(router.run(cancel.clone()));
        let worker = Worker::builder().builtins().slots(2).build()?;
        tokio::spawn(worker.run_on(net.clone(), vec![coord_addr], cancel.clone()));

        let client =
            Client::with_transport(ClientConfig::new(vec![router_addr]), net.clone()).await?;
        for words in ["one", "one two", "one two three"] {
            let view = client.run(TaskSpec::new("wordcount", words)).await?;
            let want = words.split_whitespace().count().to_string();
            assert_eq!(
                view.outcome,
                Some(Outcome::Succeeded(want.into_bytes().into()))
            );
        }
        cancel.cancel();
        Ok(())
    })
    .await
}

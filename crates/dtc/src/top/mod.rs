//! `dtc top`: the seed's live monitor, for a whole cluster. A poller asks a router (or a
//! coordinator, and then every replica of its shard) for its status once a second and
//! hands each reading to the UI loop, which also takes keys from a thread reading the
//! terminal; [`model`] holds what is shown, [`view`] draws it. The terminal is restored on
//! exit, on error and on panic (ratatui's hook); when the cluster goes away the screen says
//! so and keeps asking.

pub mod model;
pub mod view;

use crate::cli::TopArgs;
use anyhow::Context;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use dtc_proto::ask::{ask_leader, ask_replica, ask_status};
use dtc_proto::schedule::{ScheduleOp, ScheduleStatus};
use dtc_proto::status::{AdminResponse, ClusterStatus, QueueOp, QueueStatus, ShardStatus};
use dtc_proto::transport::{Secure, Tcp};
use futures_util::future::join_all;
use model::{Key, Top};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the cluster is asked.
const REFRESH: Duration = Duration::from_secs(1);

/// Reads the cluster's status through `addr`: a router answers for every shard; a
/// coordinator for itself, so its shard's other replicas are asked too.
pub async fn read(transport: &Secure<Tcp>, addr: SocketAddr) -> Result<ClusterStatus, String> {
    match ask_status(transport, addr, "dtc top").await {
        Ok(AdminResponse::Cluster(c)) => Ok(c),
        Ok(AdminResponse::Replica(me)) => {
            let asks = me.replicas.iter().map(|(_, a)| {
                let me = me.clone();
                async move {
                    let answer = if *a == me.addr {
                        Ok(me)
                    } else {
                        match a.parse::<SocketAddr>() {
                            Err(e) => Err(format!("bad address: {e}")),
                            Ok(sa) => ask_replica(transport, sa, "dtc top").await,
                        }
                    };
                    (a.clone(), answer)
                }
            });
            let mut replicas = join_all(asks).await;
            if replicas.is_empty() {
                replicas.push((me.addr.clone(), Ok(me)));
            }
            Ok(ClusterStatus {
                shards: vec![ShardStatus { shard: 0, replicas }],
            })
        }
        Ok(AdminResponse::Failed(e)) => Err(e.to_string()),
        Ok(_) => Err("an answer to another question".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// One refresh: the cluster's status (or why it could not be read), its queues and its
/// schedules (if they could be).
type Reading = (
    Result<ClusterStatus, String>,
    Option<Vec<QueueStatus>>,
    Option<Vec<ScheduleStatus>>,
);

/// Runs `dtc top` until `q` (or a signal).
pub async fn run(args: TopArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = args.target();
    anyhow::ensure!(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        "dtc top needs a terminal; for a script use: dtc status {addr} --json"
    );
    let transport = Secure::new(Tcp, args.security.credentials()?);
    let (readings, mut readings_rx) = mpsc::channel(4);
    let poll_cancel = shutdown.child_token();
    let poller = tokio::spawn(poll(transport, addr, readings, poll_cancel.clone()));
    let (keys, mut keys_rx) = mpsc::channel(64);
    let stop_keys = Arc::new(AtomicBool::new(false));
    let key_thread = {
        let stop = Arc::clone(&stop_keys);
        std::thread::spawn(move || read_keys(&keys, &stop))
    };
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let mut top = Top::new(addr.to_string());
    let result = async {
        loop {
            terminal.draw(|f| view::render(f, &top))?;
            tokio::select! {
                Some((reading, queues, schedules)) = readings_rx.recv() => {
                    top.update(reading, Instant::now());
                    if let Some(queues) = queues {
                        top.update_queues(queues);
                    }
                    if let Some(schedules) = schedules {
                        top.update_schedules(schedules);
                    }
                }
                key = keys_rx.recv() => match key {
                    Some(Ok(key)) => {
                        if !top.key(key) {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading keys")),
                    None => return Ok(()),
                },
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }
    .await;
    ratatui::restore();
    stop_keys.store(true, Ordering::Relaxed);
    poll_cancel.cancel();
    poller.await.ok();
    key_thread.join().ok();
    result
}

/// Asks once a second and hands each reading over, until `cancel` fires.
async fn poll(
    transport: Secure<Tcp>,
    addr: SocketAddr,
    readings: mpsc::Sender<Reading>,
    cancel: CancellationToken,
) {
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = cancel.cancelled() => return,
        }
        let reading = tokio::select! {
            r = async {
                let status = read(&transport, addr).await;
                let queues = ask_leader(&transport, &[addr], "dtc top", &QueueOp::List).await.ok();
                let first = ScheduleOp::List { after: None };
                let schedules = ask_leader(&transport, &[addr], "dtc top", &first).await.ok();
                (status, queues, schedules)
            } => r,
            () = cancel.cancelled() => return,
        };
        if readings.send(reading).await.is_err() {
            return;
        }
    }
}

/// Reads the terminal's keys on a thread of its own (crossterm's reads block) until `stop`.
fn read_keys(keys: &mpsc::Sender<std::io::Result<Key>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                keys.blocking_send(Err(e)).ok();
                return;
            }
        }
        let key = match event::read() {
            Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                KeyCode::Tab | KeyCode::BackTab | KeyCode::Left | KeyCode::Right => Key::NextPane,
                KeyCode::Up | KeyCode::Char('k') => Key::Up,
                KeyCode::Down | KeyCode::Char('j') => Key::Down,
                KeyCode::Char('s') => Key::Sort,
                _ => continue,
            },
            Ok(_) => continue,
            Err(e) => {
                keys.blocking_send(Err(e)).ok();
                return;
            }
        };
        if keys.blocking_send(Ok(key)).is_err() {
            return;
        }
    }
}

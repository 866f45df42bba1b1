//! Schedules from a program: [`manage`] lists, adds, pauses, resumes, triggers or deletes
//! cron schedules through a router (or a shard's coordinators), as `dtc schedule` does.
//! A schedule submits its task at each tick of its calendar, exactly once per tick even
//! across failovers (see [`dtc_proto::schedule`]).
//!
//! It speaks the admin protocol: a list needs the admin token when the cluster has
//! secrets, and a change the cluster's member certificate.

use crate::{ClientConfig, ClientError};
use dtc_proto::ask::ask_leader;
pub use dtc_proto::schedule::{CatchUp, Overlap, ScheduleOp, ScheduleSpec, ScheduleStatus};
use dtc_proto::transport::{Secure, Tcp};
use std::sync::Arc;

/// Asks `op` of the cluster at `config.addrs` with `config.credentials`: the schedules it
/// answers with (for a change, the one changed, none once deleted).
pub async fn manage(
    config: &ClientConfig,
    op: &ScheduleOp,
) -> Result<Vec<ScheduleStatus>, ClientError> {
    let transport = Secure::new(Tcp, Arc::clone(&config.credentials));
    Ok(ask_leader(&transport, &config.addrs, &config.name, op).await?)
}

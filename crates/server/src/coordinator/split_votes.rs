//! Breaks elections that keep splitting. openraft 0.9 draws a replica's election timeout
//! once, when the replica starts, and checks it on a timer of 1.5 heartbeats. Replicas that
//! start at the same moment and drew timeouts that round to the same number of checks
//! stand as candidates on the same tick, term after term: each votes for itself and none
//! wins, for as long as they stay in step (the simulation found two replicas of a shard at
//! term 985 after five minutes, both restarted at one instant). Real Raft draws a new
//! timeout for each election for this reason.
//!
//! [`SplitVotes`] watches a replica's own view (term, role, leader) and, after a few terms
//! in a row with no leader, tells the replica to sit out elections for a random time: it
//! still votes, so the others, now out of step with it, elect one of themselves or it
//! once it stands again. [`run`] performs that with openraft's runtime switch for
//! elections; the coordinator spawns it beside its actor.

use crate::shard::{NodeId, ServerState, ShardRaft, ThreadRng};
use rand08::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many terms in a row a replica stands without anyone winning before it sits out.
/// A failover usually takes one election, two when two candidates collide.
const TERMS_BEFORE_SITTING_OUT: u64 = 3;

/// What a replica has seen of its shard's elections since it last knew a leader.
#[derive(Debug, Default)]
pub struct SplitVotes {
    /// The last term seen.
    term: u64,
    /// Terms it stood in since it last knew a leader.
    stood: u64,
}

impl SplitVotes {
    /// Takes the replica's current view. Returns true when it has stood in
    /// [`TERMS_BEFORE_SITTING_OUT`] terms in a row with nobody elected: it should sit out
    /// the next elections for a while.
    pub fn observe(&mut self, term: u64, state: ServerState, leader: Option<NodeId>) -> bool {
        let new_term = term > self.term;
        self.term = self.term.max(term);
        if leader.is_some() || state == ServerState::Leader {
            self.stood = 0;
            return false;
        }
        if new_term && state == ServerState::Candidate {
            self.stood += 1;
        }
        if self.stood >= TERMS_BEFORE_SITTING_OUT {
            self.stood = 0;
            return true;
        }
        false
    }
}

/// How long a replica sits out: a random time up to two of its longest election timeouts,
/// so that replicas that stood in step stand again apart.
fn sit_out_for(election_timeout_max: Duration) -> Duration {
    let max = u64::try_from(election_timeout_max.as_millis()).unwrap_or(u64::MAX);
    let ms = ThreadRng.gen_range(0..=max.saturating_mul(2));
    Duration::from_millis(ms)
}

/// Watches `raft`'s metrics until `cancel` fires; when [`SplitVotes`] says so, turns the
/// replica's elections off for a random time, then on again.
pub async fn run(raft: ShardRaft, election_timeout_max: Duration, cancel: CancellationToken) {
    // The server metrics (vote, role, leader) change only with them, not with every entry
    // appended or applied as the full metrics do: this task wakes per election, not per
    // entry.
    let mut metrics = raft.server_metrics();
    let mut votes = SplitVotes::default();
    loop {
        let sit_out = {
            let m = metrics.borrow_and_update();
            votes.observe(m.vote.leader_id().term, m.state, m.current_leader)
        };
        if sit_out {
            let pause = sit_out_for(election_timeout_max);
            tracing::info!(
                ?pause,
                "elections keep splitting; this replica sits them out for a while"
            );
            raft.runtime_config().elect(false);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return,
            }
            raft.runtime_config().elect(true);
            continue;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_sits_out_after_three_terms_in_a_row_without_a_leader() {
        let mut v = SplitVotes::default();
        assert!(!v.observe(1, ServerState::Follower, Some(1)));
        assert!(!v.observe(2, ServerState::Candidate, None));
        // The same term seen again (its vote came in) does not count twice.
        assert!(!v.observe(2, ServerState::Candidate, None));
        assert!(!v.observe(3, ServerState::Candidate, None));
        assert!(v.observe(4, ServerState::Candidate, None));
        // It starts counting afresh.
        assert!(!v.observe(5, ServerState::Candidate, None));
    }

    #[test]
    fn a_leader_elected_in_between_resets_the_count() {
        let mut v = SplitVotes::default();
        assert!(!v.observe(2, ServerState::Candidate, None));
        assert!(!v.observe(3, ServerState::Candidate, None));
        assert!(!v.observe(3, ServerState::Follower, Some(2)));
        assert!(!v.observe(4, ServerState::Candidate, None));
        assert!(!v.observe(5, ServerState::Candidate, None));
        assert!(v.observe(6, ServerState::Candidate, None));
    }

    #[test]
    fn terms_it_only_voted_in_do_not_count() {
        let mut v = SplitVotes::default();
        for term in 1..10 {
            assert!(!v.observe(term, ServerState::Follower, None));
        }
        assert!(!v.observe(10, ServerState::Leader, Some(0)));
    }

    #[test]
    fn a_pause_is_at_most_two_election_timeouts() {
        for _ in 0..100 {
            assert!(sit_out_for(Duration::from_millis(300)) <= Duration::from_millis(600));
        }
    }
}

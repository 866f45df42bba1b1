//! How far a replica's own log is durable, and the rule that lets a leader write its log in
//! parallel with replicating it.
//!
//! openraft 0.9 waits, inside its core, for the log store to report an append durable before
//! it hands the entries to replication; a commit then held the leader's fsync and a
//! follower's back to back. The Raft thesis (§10.2.1) lets a leader write its own log in
//! parallel with replication, as long as it counts itself toward a majority only once its
//! own write is durable. openraft counts the store's report itself, so dtc moves the wait:
//!
//! - a log store reports a leader's own appends (entries of its current leadership) durable
//!   at once, when the shard has more than one replica ([`LeaderWrites`]), and marks them
//!   here when they really are;
//! - the leader's replication network ([`super::peer`]) holds a follower's acknowledgement of
//!   entries until the leader's own copy of them is durable ([`Durability::wait`]).
//!
//! Whatever openraft then counts as a majority is one: the leader and a follower, both
//! durable, or two followers. A leader that steps down first saves the new vote, and that
//! save syncs everything appended before it, so it never answers a new leader for entries it
//! has not made durable. Followers' appends are reported only once durable, as before.
//!
//! One more rule closes the last gap. A leader may crash after its entries reached followers
//! but before its own copy was durable, and openraft 0.9 restarts a replica whose saved vote
//! is its own committed one as the leader of that same term: it would write new, different
//! entries at the indexes it lost, under log ids the followers already hold for the old ones
//! (the deterministic simulation found this). So a restarting replica reads its own leader
//! vote back as a candidate's ([`LeaderWrites::on_restart`]): it starts as a follower, and
//! the shard elects a leader in a new term.
//!
//! The log stores own the writing side (appends, syncs, truncations); the peer network and
//! the coordinator hold clones to wait on it or to learn that the log failed.

use super::raft_types::{LogId, NodeId, Vote};
use std::sync::Arc;
use tokio::sync::watch;

/// Whether a replica's log store may report its own appends as a leader durable early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderWrites {
    /// The replica the store belongs to.
    pub replica: NodeId,
    /// Early reports on: the shard has other replicas whose acknowledgements wait on
    /// [`Durability`]. A one-replica shard commits on its own report, so it is off there.
    pub parallel: bool,
}

impl LeaderWrites {
    /// Whether entries starting with `first` are this replica's own, appended as the leader
    /// that `vote` (the last vote saved) names, and so may be reported durable early. A
    /// term has one leader, whose vote is committed (granted by a majority) and saved
    /// before it appends; a replica that follows another leader has saved that vote.
    pub fn early(&self, vote: Option<&Vote>, first: &LogId) -> bool {
        self.parallel
            && vote.is_some_and(|v| {
                v.is_committed()
                    && v.leader_id().voted_for() == Some(self.replica)
                    && v.leader_id().get_term() == first.leader_id.term
            })
    }

    /// The vote a replica restarts with: its own committed vote, as leader, becomes its
    /// candidate vote of the same term, so that it does not resume leading that term (see
    /// the module doc). Any other vote is kept.
    pub fn on_restart(&self, vote: Vote) -> Vote {
        let leader = vote.leader_id();
        match leader.voted_for() {
            Some(id) if self.parallel && vote.is_committed() && id == self.replica => {
                Vote::new(leader.get_term(), id)
            }
            _ => vote,
        }
    }
}

/// What is durable: the last durable index of the current generation of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Durable {
    /// Bumped by every truncation, so that a sync queued before it cannot mark the entries
    /// written after it.
    generation: u64,
    upto: Option<u64>,
    /// The log could not be written: nothing more will become durable.
    failed: bool,
}

/// Why [`Durability::wait`] gave up.
#[derive(Debug, thiserror::Error)]
#[error("this replica's log can no longer be written")]
pub struct LogFailed;

/// How far a replica's own log is durable; clones share it.
#[derive(Clone, Debug)]
pub struct Durability(Arc<watch::Sender<Durable>>);

impl Durability {
    /// A log durable up to `upto` (what a replica finds on disk when it starts).
    pub fn new(upto: Option<u64>) -> Self {
        Self(Arc::new(watch::Sender::new(Durable {
            upto,
            ..Durable::default()
        })))
    }

    /// The current generation, to stamp an append with.
    pub fn generation(&self) -> u64 {
        self.0.borrow().generation
    }

    /// Entries up to `upto`, appended in `generation`, are durable.
    pub fn synced(&self, generation: u64, upto: u64) {
        self.0.send_if_modified(|d| {
            let raise = d.generation == generation && d.upto < Some(upto);
            if raise {
                d.upto = Some(upto);
            }
            raise
        });
    }

    /// The log was cut back to end before `index`.
    pub fn truncated(&self, index: u64) {
        self.0.send_modify(|d| {
            d.generation += 1;
            d.upto = d.upto.min(index.checked_sub(1));
        });
    }

    /// The log can no longer be written.
    pub fn failed(&self) {
        self.0.send_modify(|d| d.failed = true);
    }

    /// Waits until the entry at `index` (and everything before it) is durable.
    pub async fn wait(&self, index: u64) -> Result<(), LogFailed> {
        let mut rx = self.0.subscribe();
        let d = rx
            .wait_for(|d| d.failed || d.upto >= Some(index))
            .await
            .map_err(|_| LogFailed)?;
        if d.failed { Err(LogFailed) } else { Ok(()) }
    }

    /// Resolves once the log has failed.
    pub async fn failure(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so this only returns on a failure.
        rx.wait_for(|d| d.failed).await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Vote};

    #[test]
    fn a_sync_from_before_a_truncation_marks_nothing_after_it() {
        let d = Durability::new(Some(10));
        let old = d.generation();
        d.truncated(8);
        d.synced(old, 12);
        assert_eq!(d.0.borrow().upto, Some(7));
        d.synced(d.generation(), 9);
        assert_eq!(d.0.borrow().upto, Some(9));
        d.synced(d.generation(), 5);
        assert_eq!(
            d.0.borrow().upto,
            Some(9),
            "durability never goes back on a sync"
        );
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_index_is_durable_or_the_log_fails() {
        let d = Durability::new(None);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait(3).await }
        });
        d.synced(d.generation(), 2);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        d.synced(d.generation(), 3);
        assert!(matches!(waiter.await, Ok(Ok(()))));

        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait(4).await }
        });
        d.failed();
        assert!(matches!(waiter.await, Ok(Err(LogFailed))));
        assert!(d.0.borrow().failed);
    }

    #[test]
    fn only_the_current_leaders_own_entries_are_reported_early() {
        let me = LeaderWrites {
            replica: 1,
            parallel: true,
        };
        let mine = LogId::new(CommittedLeaderId::new(3, 1), 7);
        let leading = Vote::new_committed(3, 1);
        assert!(me.early(Some(&leading), &mine));
        // Following a later leader: even entries this replica once proposed wait.
        assert!(!me.early(Some(&Vote::new_committed(4, 2)), &mine));
        // Another leader's entries.
        let theirs = LogId::new(CommittedLeaderId::new(3, 2), 7);
        assert!(!me.early(Some(&Vote::new_committed(3, 2)), &theirs));
        assert!(!me.early(None, &mine));
        // A candidate appends nothing of its own.
        assert!(!me.early(Some(&Vote::new(3, 1)), &mine));
        let alone = LeaderWrites {
            replica: 1,
            parallel: false,
        };
        assert!(!alone.early(Some(&leading), &mine));
    }

    #[test]
    fn a_restarting_leader_comes_back_as_a_candidate_of_its_term() {
        let me = LeaderWrites {
            replica: 1,
            parallel: true,
        };
        assert_eq!(me.on_restart(Vote::new_committed(3, 1)), Vote::new(3, 1));
        assert_eq!(
            me.on_restart(Vote::new_committed(3, 2)),
            Vote::new_committed(3, 2)
        );
        assert_eq!(me.on_restart(Vote::new(4, 1)), Vote::new(4, 1));
        let alone = LeaderWrites {
            replica: 1,
            parallel: false,
        };
        assert_eq!(
            alone.on_restart(Vote::new_committed(3, 1)),
            Vote::new_committed(3, 1)
        );
    }
}

//! Group commit: the leader's commands gathered into Raft entries, and the lookups that must
//! be answered after them. A pure type owned by the actor, which proposes the entries it
//! hands out and feeds back their results in order.
//!
//! Each turn's commands become one entry (a [`Batch`](crate::shard::Batch), split only past
//! [`MAX_ENTRY_BYTES`]), proposed without waiting — unless enough entries are already on
//! their way, in which case they gather, with the turns that follow, into the next entry.
//! Under load — many tasks running on the shard's workers — an entry also waits until the
//! commit linger has passed since the previous one was proposed, so that one round carries
//! the completions about to arrive: rounds, not tasks, are what cost the CPU. A lookup is
//! answered once the entries proposed before it are applied, so that it sees them.

use crate::shard::Command;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A proposal is sealed once its commands carry this many payload bytes.
const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// How many tasks must be running on the shard's workers for an entry to linger: with
/// fewer, their completions are too few to wait for, and an entry goes at once.
const LINGER_LOAD: usize = 8;

/// Commands waiting to be proposed and proposals waiting for their results. `T` is what to
/// do once a command is applied; `Q` a lookup.
pub(super) struct Proposer<T, Q> {
    /// Commands of this turn, with what to do after each is applied.
    batch: Vec<(Command, T)>,
    batch_bytes: usize,
    /// Full proposals, sealed when `batch` grew past its size bound.
    sealed: Vec<Vec<(Command, T)>>,
    /// Lookups not yet attached to a proposal.
    reads: Vec<Q>,
    /// Proposals in flight, oldest first.
    pending: VecDeque<Pending<T, Q>>,
    /// Entries proposed and not yet applied, past which commands gather into the next one.
    max_in_flight: usize,
    /// Under load, the least time between two entries' proposals.
    linger: Duration,
    last_proposed: Instant,
    /// When the lingering commands are due, if they linger.
    linger_until: Option<Instant>,
    /// This turn's commands were held back (and the lookups after them wait too).
    holding: bool,
}

/// A proposal in flight: what to do with each command's result, and the lookups that came
/// after it.
pub(super) struct Pending<T, Q> {
    pub thens: Vec<T>,
    pub reads: Vec<Q>,
    /// The election barrier: once applied, the leader's ready queue is rebuilt.
    pub barrier: bool,
    /// The term it was proposed in: a result for its index from an entry of another term
    /// is not its result (the entry was replaced after this replica stopped leading).
    pub term: u64,
}

impl<T, Q> Proposer<T, Q> {
    pub(super) fn new(max_in_flight: usize, linger: Duration, now: Instant) -> Self {
        Self {
            batch: Vec::new(),
            batch_bytes: 0,
            sealed: Vec::new(),
            reads: Vec::new(),
            pending: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            linger,
            last_proposed: now,
            linger_until: None,
            holding: false,
        }
    }

    /// Adds a command to this turn's proposal, sealing the proposal when it grows too big.
    pub(super) fn push(&mut self, cmd: Command, then: T) {
        self.batch_bytes += cmd.payload_len();
        self.batch.push((cmd, then));
        if self.batch_bytes >= MAX_ENTRY_BYTES {
            self.sealed.push(std::mem::take(&mut self.batch));
            self.batch_bytes = 0;
        }
    }

    /// A lookup, to be answered after the proposals before it.
    pub(super) fn read(&mut self, read: Q) {
        self.reads.push(read);
    }

    /// The entries to propose now, given how many tasks run on the workers (`load`): none
    /// while enough are in flight or while they linger, otherwise every sealed one and this
    /// turn's.
    pub(super) fn due(&mut self, now: Instant, load: usize) -> Vec<Vec<(Command, T)>> {
        self.linger_until = None;
        self.holding = true;
        if self.pending.len() >= self.max_in_flight && self.sealed.is_empty() {
            // Enough entries are on their way: this turn's commands (and the lookups after
            // them) gather into a bigger entry, proposed when one of those commits.
            return Vec::new();
        }
        let due = self.last_proposed + self.linger;
        if !self.batch.is_empty() && self.sealed.is_empty() && load >= LINGER_LOAD && now < due {
            self.linger_until = Some(due);
            return Vec::new();
        }
        self.holding = false;
        if !self.batch.is_empty() {
            self.last_proposed = now;
            self.sealed.push(std::mem::take(&mut self.batch));
            self.batch_bytes = 0;
        }
        std::mem::take(&mut self.sealed)
    }

    /// When the lingering commands are due, if they linger.
    pub(super) fn linger_until(&self) -> Option<Instant> {
        self.linger_until
    }

    /// An entry was proposed in `term`; its result comes after those of the entries
    /// before it.
    pub(super) fn proposed(&mut self, thens: Vec<T>, barrier: bool, term: u64) {
        self.pending.push_back(Pending {
            thens,
            reads: Vec::new(),
            barrier,
            term,
        });
    }

    /// The lookups of this turn: attached to the last proposal in flight, or handed back to
    /// be answered now if none is. While entries gather (see [`Proposer::due`]), they wait.
    pub(super) fn settle_reads(&mut self) -> Vec<Q> {
        if self.reads.is_empty() || self.holding {
            return Vec::new();
        }
        let reads = std::mem::take(&mut self.reads);
        match self.pending.back_mut() {
            Some(last) => {
                last.reads.extend(reads);
                Vec::new()
            }
            None => reads,
        }
    }

    /// The oldest proposal in flight, whose result has come.
    pub(super) fn applied(&mut self) -> Option<Pending<T, Q>> {
        self.pending.pop_front()
    }

    /// Every proposal still in flight, oldest first, which will not be waited for any more.
    pub(super) fn take_in_flight(&mut self) -> Vec<Pending<T, Q>> {
        self.pending.drain(..).collect()
    }

    /// Everything not yet proposed: the commands (with their follow-ups) and the lookups.
    pub(super) fn take_unproposed(&mut self) -> (Vec<T>, Vec<Q>) {
        let mut thens: Vec<T> = std::mem::take(&mut self.sealed)
            .into_iter()
            .flatten()
            .map(|(_, t)| t)
            .collect();
        thens.extend(std::mem::take(&mut self.batch).into_iter().map(|(_, t)| t));
        self.batch_bytes = 0;
        (thens, std::mem::take(&mut self.reads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use dtc_proto::{TaskId, TaskSpec};

    const LINGER: Duration = Duration::from_millis(2);

    fn expire() -> Command {
        Command::Expire { at_ms: 0 }
    }

    fn submit(bytes: usize) -> Command {
        let spec = TaskSpec {
            id: TaskId(1),
            kind: "noop".into(),
            payload: Bytes::from(vec![0; bytes]),
            max_attempts: 1,
            options: None,
        };
        Command::Submit { spec, at_ms: 0 }
    }

    #[test]
    fn a_turns_commands_go_as_one_entry_and_its_lookups_follow_it() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(4, LINGER, now);
        p.push(expire(), 1);
        p.push(expire(), 2);
        p.read("get");
        let due = p.due(now + LINGER, 0);
        assert_eq!(due.len(), 1);
        let thens: Vec<u32> = due.into_iter().flatten().map(|(_, t)| t).collect();
        assert_eq!(thens, [1, 2]);
        p.proposed(thens, false, 1);
        assert!(
            p.settle_reads().is_empty(),
            "attached to the entry in flight"
        );
        let pending = p.applied().map(|p| (p.thens, p.reads));
        assert_eq!(pending, Some((vec![1, 2], vec!["get"])));
    }

    #[test]
    fn a_lookup_with_nothing_in_flight_is_answered_now() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(4, LINGER, now);
        p.read("get");
        assert!(p.due(now, 0).is_empty());
        assert_eq!(p.settle_reads(), ["get"]);
    }

    #[test]
    fn under_load_commands_linger_until_the_linger_has_passed() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(4, LINGER, now);
        p.push(expire(), 1);
        p.read("get");
        assert!(p.due(now, LINGER_LOAD).is_empty());
        assert_eq!(p.linger_until(), Some(now + LINGER));
        assert!(p.settle_reads().is_empty(), "the lookup waits with them");
        // Without load they go at once; with it, once the linger has passed.
        assert_eq!(p.due(now, LINGER_LOAD - 1).len(), 1);
        assert_eq!(p.linger_until(), None);
        p.push(expire(), 2);
        assert!(p.due(now + LINGER / 2, LINGER_LOAD).is_empty());
        assert_eq!(p.due(now + LINGER, LINGER_LOAD).len(), 1);
    }

    #[test]
    fn commands_gather_while_enough_entries_are_in_flight() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(1, LINGER, now);
        p.push(expire(), 1);
        let first = p.due(now, 0);
        p.proposed(
            first.into_iter().flatten().map(|(_, t)| t).collect(),
            false,
            1,
        );
        p.push(expire(), 2);
        p.push(expire(), 3);
        assert!(p.due(now, 0).is_empty(), "one entry in flight is enough");
        assert!(p.applied().is_some());
        let next = p.due(now, 0);
        assert_eq!(next.len(), 1, "the gathered commands go as one entry");
        assert_eq!(next[0].len(), 2);
    }

    #[test]
    fn a_proposal_past_the_size_bound_is_sealed_and_goes_even_under_load() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(4, LINGER, now);
        p.push(submit(MAX_ENTRY_BYTES), 1);
        p.push(submit(10), 2);
        let due = p.due(now, LINGER_LOAD);
        assert_eq!(due.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn stepping_down_hands_back_everything_unproposed() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(4, LINGER, now);
        p.push(submit(MAX_ENTRY_BYTES), 1);
        p.push(expire(), 2);
        p.read("get");
        let (thens, reads) = p.take_unproposed();
        assert_eq!((thens, reads), (vec![1, 2], vec!["get"]));
        assert!(p.due(now, 0).is_empty());
    }

    #[test]
    fn proposals_left_in_flight_are_handed_back_and_no_longer_awaited() {
        let now = Instant::now();
        let mut p: Proposer<u32, &str> = Proposer::new(4, LINGER, now);
        p.push(expire(), 1);
        let thens = p.due(now, 0).concat().into_iter().map(|(_, t)| t).collect();
        p.proposed(thens, true, 5);
        p.read("get");
        assert!(
            p.settle_reads().is_empty(),
            "the lookup waits for the proposal"
        );
        let left = p.take_in_flight();
        assert_eq!(left.len(), 1);
        assert_eq!((&left[0].thens, &left[0].reads), (&vec![1], &vec!["get"]));
        assert_eq!((left[0].barrier, left[0].term), (true, 5));
        assert!(p.applied().is_none(), "nothing is awaited any more");
        p.read("later");
        assert_eq!(
            p.settle_reads(),
            ["later"],
            "a lookup no longer waits for it"
        );
    }
}

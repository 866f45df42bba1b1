//! Following a shard's leader: which address to dial first, and whether a replica's
//! `NotLeader` answer is followed at once or after a pause. The one rule every connection
//! that must reach a leader uses — a client's or router's [`mux`](crate::mux) and a
//! worker (`dtc_sdk::Worker`) — kept apart from their I/O so that it is tested alone.

use std::net::SocketAddr;

/// What to do after a replica said it does not lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Dial the leader it named now.
    Now,
    /// Wait a moment first: nobody is elected yet, the leader named is unreachable, or
    /// two replicas keep naming each other (an election not yet settled).
    Pause,
}

/// The leader as the last refusal named it, and whether the last connection was a
/// redirect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderTrail {
    leader: Option<SocketAddr>,
    redirected: bool,
}

impl LeaderTrail {
    /// The addresses to dial in turn: the named leader first, then the others.
    pub fn order<'a>(&self, addrs: &'a [SocketAddr]) -> impl Iterator<Item = SocketAddr> + 'a {
        let leader = self.leader;
        leader
            .into_iter()
            .chain(addrs.iter().copied().filter(move |a| Some(*a) != leader))
    }

    /// The replica at `from` does not lead and named `hint` (or nobody). A named leader is
    /// followed at once only once in a row; one that is `from` itself or just proved
    /// unreachable is not followed.
    pub fn not_leader(
        &mut self,
        from: SocketAddr,
        hint: Option<SocketAddr>,
        unreachable: &[SocketAddr],
    ) -> Step {
        self.leader = hint.filter(|a| *a != from && !unreachable.contains(a));
        match self.leader {
            Some(_) if !std::mem::replace(&mut self.redirected, true) => Step::Now,
            Some(_) => Step::Pause,
            None => {
                self.redirected = false;
                Step::Pause
            }
        }
    }

    /// The connection served until it ended (or none could be made): start from the list.
    pub fn lost(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_named_leader_is_dialled_first_and_followed_at_once_only_once_in_a_row() {
        let addrs = [addr(1), addr(2), addr(3)];
        let mut trail = LeaderTrail::default();
        assert_eq!(trail.order(&addrs).collect::<Vec<_>>(), addrs);
        assert_eq!(trail.not_leader(addr(1), Some(addr(3)), &[]), Step::Now);
        assert_eq!(
            trail.order(&addrs).collect::<Vec<_>>(),
            [addr(3), addr(1), addr(2)]
        );
        // Two replicas naming each other: the second redirect in a row waits.
        assert_eq!(trail.not_leader(addr(3), Some(addr(1)), &[]), Step::Pause);
        assert_eq!(trail.order(&addrs).next(), Some(addr(1)));
        trail.lost();
        assert_eq!(trail.order(&addrs).collect::<Vec<_>>(), addrs);
        assert_eq!(trail.not_leader(addr(2), Some(addr(1)), &[]), Step::Now);
    }

    #[test]
    fn nobody_named_itself_named_or_an_unreachable_leader_is_waited_for() {
        let addrs = [addr(1), addr(2)];
        let mut trail = LeaderTrail::default();
        assert_eq!(trail.not_leader(addr(1), None, &[]), Step::Pause);
        assert_eq!(trail.not_leader(addr(1), Some(addr(1)), &[]), Step::Pause);
        assert_eq!(
            trail.not_leader(addr(1), Some(addr(2)), &[addr(2)]),
            Step::Pause
        );
        assert_eq!(trail.order(&addrs).collect::<Vec<_>>(), addrs);
        // A pause for want of a leader ends a run of redirects.
        assert_eq!(trail.not_leader(addr(1), Some(addr(2)), &[]), Step::Now);
    }
}

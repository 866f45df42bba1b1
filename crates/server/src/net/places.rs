//! How many connections a listener holds, in total and per remote address. [`Places`] is
//! the decision, shared by the binary protocol's accept loop and the HTTP server: a socket
//! either takes a [`Place`] (given back when dropped) or is refused at once.
//!
//! - An address holds at most its share. A socket past it does not count against the
//!   total: a few may be kept just long enough to be told why in the handshake (at most
//!   [`PlaceBounds::telling`] at once across all addresses), the rest are closed at once. So one
//!   address, however many sockets it opens, never holds more than its share of the node.
//! - The last places of the total are kept for the cluster's own members (replicas and
//!   routers re-dialling): a connection that takes one is admitted only if its handshake
//!   proves it a member ([`PlaceKind::Reserve`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The most sockets, across all addresses, that the binary protocol's listener keeps open
/// past their address's share only to tell them why in the handshake.
pub const MAX_TELLING: usize = 64;

/// How many of `total` places are kept for members: a sixteenth, at least one when there
/// are two or more.
pub fn member_reserve(total: usize) -> usize {
    (total / 16).max(usize::from(total > 1))
}

/// The bounds of one listener.
#[derive(Clone, Copy, Debug)]
pub struct PlaceBounds {
    /// The most connections at once.
    pub total: usize,
    /// The most from one remote address.
    pub per_address: usize,
    /// How many of `total` only members may hold.
    pub reserve: usize,
    /// How many sockets past their address's share may be kept at once to be told why
    /// (none where the protocol has no way to tell them).
    pub telling: usize,
}

/// A listener's open connections.
#[derive(Debug)]
pub struct Places {
    bounds: PlaceBounds,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    /// Places held (general and reserve).
    total: usize,
    /// Sockets past their address's share, kept to be told why.
    telling: usize,
    /// Places held per address.
    by_address: HashMap<IpAddr, usize>,
}

/// What a taken place allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceKind {
    /// Any connection the gate admits.
    General,
    /// One of the places kept for members: only a connection proved a member may stay.
    Reserve,
    /// Not a place at all: the address is over its share; the socket is kept only to be
    /// told so in the handshake.
    Telling,
}

/// Why a socket got no place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPlace {
    /// The address holds its share (and enough sockets are being told so).
    AddressFull,
    /// Every place of the node is taken.
    NodeFull,
}

/// One socket's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Place {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
    kind: PlaceKind,
}

impl Place {
    /// What the place allows.
    pub fn kind(&self) -> PlaceKind {
        self.kind
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if self.kind == PlaceKind::Telling {
            open.telling = open.telling.saturating_sub(1);
            return;
        }
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

impl Places {
    /// A listener bounded by `bounds`.
    pub fn new(bounds: PlaceBounds) -> Self {
        Self {
            bounds,
            open: Arc::default(),
        }
    }

    /// The bounds.
    pub fn bounds(&self) -> PlaceBounds {
        self.bounds
    }

    /// A place for a new socket from `address`, or why there is none.
    pub fn take(&self, address: IpAddr) -> Result<Place, NoPlace> {
        let Ok(mut open) = self.open.lock() else {
            return Err(NoPlace::NodeFull);
        };
        let held = open.by_address.get(&address).copied().unwrap_or(0);
        let kind = if held >= self.bounds.per_address {
            if open.telling >= self.bounds.telling {
                return Err(NoPlace::AddressFull);
            }
            open.telling += 1;
            PlaceKind::Telling
        } else if open.total >= self.bounds.total {
            return Err(NoPlace::NodeFull);
        } else {
            open.total += 1;
            *open.by_address.entry(address).or_insert(0) += 1;
            if open.total > self.bounds.total.saturating_sub(self.bounds.reserve) {
                PlaceKind::Reserve
            } else {
                PlaceKind::General
            }
        };
        Ok(Place {
            open: Arc::clone(&self.open),
            address,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_never_holds_more_than_its_share_of_the_total() {
        let places = Places::new(PlaceBounds {
            total: 300,
            per_address: 50,
            reserve: 18,
            telling: MAX_TELLING,
        });
        let mut held = Vec::new();
        let mut telling = 0;
        let mut refused = 0;
        for _ in 0..400 {
            match places.take(ip(2)) {
                Ok(p) if p.kind() == PlaceKind::Telling => {
                    telling += 1;
                    held.push(p);
                }
                Ok(p) => held.push(p),
                Err(e) => {
                    assert_eq!(e, NoPlace::AddressFull);
                    refused += 1;
                }
            }
        }
        assert_eq!((telling, refused), (MAX_TELLING, 400 - 50 - MAX_TELLING));
        // Another address is served, from the general places.
        assert_eq!(places.take(ip(1)).map(|p| p.kind()), Ok(PlaceKind::General));
        // Once the told sockets close, others can be told again.
        held.retain(|p| p.kind() != PlaceKind::Telling);
        assert_eq!(places.take(ip(2)).map(|p| p.kind()), Ok(PlaceKind::Telling));
    }

    #[test]
    fn the_last_places_are_reserved_and_given_back_when_dropped() {
        let places = Places::new(PlaceBounds {
            total: 10,
            per_address: 10,
            reserve: 2,
            telling: 0,
        });
        let general: Vec<Place> = (0..8).map_while(|i| places.take(ip(i)).ok()).collect();
        assert!(general.iter().all(|p| p.kind() == PlaceKind::General));
        let reserve: Vec<Place> = (0..2).map_while(|i| places.take(ip(i)).ok()).collect();
        assert!(reserve.iter().all(|p| p.kind() == PlaceKind::Reserve));
        assert_eq!(places.take(ip(9)).err(), Some(NoPlace::NodeFull));
        drop(general);
        assert_eq!(places.take(ip(9)).map(|p| p.kind()), Ok(PlaceKind::General));
        let open = places.open.lock().map(|o| (o.total, o.by_address.len()));
        assert_eq!(open.ok(), Some((2, 2)), "the dropped places are gone");
    }

    #[test]
    fn the_reserve_is_a_sixteenth() {
        assert_eq!(member_reserve(0), 0);
        assert_eq!(member_reserve(1), 0);
        assert_eq!(member_reserve(2), 1);
        assert_eq!(member_reserve(300), 18);
        assert_eq!(member_reserve(8192), 512);
    }
}

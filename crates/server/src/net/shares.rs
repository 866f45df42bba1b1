//! Per remote address, one share of a bounded resource that all its connections draw on:
//! the requests that wait for their task to finish. A client opening more connections gets
//! no more waits, so one host cannot take what a node keeps for all (the router's budget
//! of waits towards a shard holds at least two addresses' shares). The share lives as long
//! as something holds it; the listener asks for an address's share when it admits a
//! connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Semaphore;

/// How many addresses are remembered before the forgotten ones are swept out.
const SWEEP_AT: usize = 4096;

/// Each remote address's share of one bound.
#[derive(Debug)]
pub struct AddressShares {
    per_address: usize,
    shares: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    by_address: HashMap<IpAddr, Weak<Semaphore>>,
    /// When the map is this large, addresses nobody holds any more are removed.
    sweep_at: usize,
}

impl AddressShares {
    /// Shares of `per_address` permits each.
    pub fn new(per_address: usize) -> Self {
        Self {
            per_address,
            shares: Mutex::new(Held {
                by_address: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    /// The share of `address`: the same semaphore for all its holders at once.
    pub fn of(&self, address: IpAddr) -> Arc<Semaphore> {
        let Ok(mut held) = self.shares.lock() else {
            // A poisoned map still bounds: a share of its own for this holder.
            return Arc::new(Semaphore::new(self.per_address));
        };
        if let Some(share) = held.by_address.get(&address).and_then(Weak::upgrade) {
            return share;
        }
        if held.by_address.len() >= held.sweep_at {
            held.by_address.retain(|_, w| w.strong_count() > 0);
            held.sweep_at = (held.by_address.len() * 2).max(SWEEP_AT);
        }
        let share = Arc::new(Semaphore::new(self.per_address));
        held.by_address.insert(address, Arc::downgrade(&share));
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_addresss_holders_draw_on_one_share_until_none_holds_it() {
        let shares = AddressShares::new(3);
        let a = IpAddr::from([127, 0, 0, 2]);
        let first = shares.of(a);
        let second = shares.of(a);
        let _permits = Arc::clone(&first).try_acquire_many_owned(3);
        assert_eq!(second.available_permits(), 0, "one share for both");
        assert_eq!(
            shares.of(IpAddr::from([127, 0, 0, 3])).available_permits(),
            3,
            "another address has its own"
        );
        drop((first, second, _permits));
        assert_eq!(shares.of(a).available_permits(), 3, "a fresh share");
    }

    #[test]
    fn forgotten_addresses_are_swept_out() {
        let shares = AddressShares::new(1);
        for i in 0..3 * SWEEP_AT as u32 {
            drop(shares.of(IpAddr::from(i.to_be_bytes())));
        }
        let len = shares
            .shares
            .lock()
            .map(|h| h.by_address.len())
            .unwrap_or(0);
        assert!(len <= SWEEP_AT, "{len} addresses remembered");
    }
}

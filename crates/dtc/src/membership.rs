//! Who the replicas of a shard are, from a coordinator's command line: its own address, its
//! `--peer` list and, optionally, `--id`. Every replica must derive the same id → address
//! map from its own flags; without ids, replicas are numbered 1, 2, … in the order of their
//! addresses, which every replica sees alike.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One `--peer` value: `ADDR` or `ID=ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerArg {
    /// The id, when given.
    pub id: Option<u64>,
    /// The address.
    pub addr: SocketAddr,
}

impl FromStr for PeerArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addr) = match s.split_once('=') {
            Some((id, addr)) => {
                let id = id
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{id:?} is not a replica id (a number ≥ 1)"))?;
                (Some(id), addr)
            }
            None => (None, s),
        };
        let addr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:5001"))?;
        if id == Some(0) {
            return Err("replica ids start at 1".into());
        }
        Ok(Self { id, addr })
    }
}

impl fmt::Display for PeerArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}={}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// This replica's id and the shard's replicas (id → address), itself included.
pub fn resolve(
    me: SocketAddr,
    id: Option<u64>,
    peers: &[PeerArg],
) -> Result<(u64, BTreeMap<u64, String>), String> {
    let mut members = BTreeMap::new();
    match id {
        Some(0) => return Err("replica ids start at 1".into()),
        Some(id) => {
            members.insert(id, me);
            for p in peers {
                let Some(pid) = p.id else {
                    return Err(format!(
                        "with --id, give every peer as ID=ADDR (got --peer {p})"
                    ));
                };
                if members.insert(pid, p.addr).is_some() {
                    return Err(format!("replica id {pid} is given twice"));
                }
            }
        }
        None => {
            if let Some(p) = peers.iter().find(|p| p.id.is_some()) {
                return Err(format!(
                    "--peer {p} names an id: give this replica's own --id too"
                ));
            }
            let mut addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
            addrs.push(me);
            addrs.sort_unstable();
            for (i, addr) in addrs.into_iter().enumerate() {
                members.insert(i as u64 + 1, addr);
            }
        }
    }
    let mut seen = BTreeMap::new();
    for (id, addr) in &members {
        if let Some(other) = seen.insert(*addr, *id) {
            return Err(format!("{addr} is given for replicas {other} and {id}"));
        }
    }
    let me_id = members
        .iter()
        .find(|(_, a)| **a == me)
        .map(|(id, _)| *id)
        .ok_or_else(|| format!("{me} is not among the replicas"))?;
    Ok((
        me_id,
        members
            .into_iter()
            .map(|(id, a)| (id, a.to_string()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn peer(s: &str) -> PeerArg {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_replica_derives_the_same_ids_from_its_own_flags() {
        let a = resolve(
            addr(5001),
            None,
            &[peer("127.0.0.1:5000"), peer("127.0.0.1:5002")],
        );
        let b = resolve(
            addr(5000),
            None,
            &[peer("127.0.0.1:5002"), peer("127.0.0.1:5001")],
        );
        let (ida, ma) = a.unwrap_or_default();
        let (idb, mb) = b.unwrap_or_default();
        assert_eq!(ma, mb);
        assert_eq!(ma.len(), 3);
        assert_eq!((ida, idb), (2, 1));
        assert_eq!(ma.get(&1).map(String::as_str), Some("127.0.0.1:5000"));
    }

    #[test]
    fn explicit_ids_need_every_peer_named() {
        let ok = resolve(addr(5000), Some(7), &[peer("3=127.0.0.1:5001")]);
        assert_eq!(ok.map(|(id, m)| (id, m.len())), Ok((7, 2)));
        assert!(resolve(addr(5000), Some(7), &[peer("127.0.0.1:5001")]).is_err());
        assert!(resolve(addr(5000), None, &[peer("3=127.0.0.1:5001")]).is_err());
        assert!(resolve(addr(5000), Some(3), &[peer("3=127.0.0.1:5001")]).is_err());
        assert!(resolve(addr(5000), None, &[peer("127.0.0.1:5000")]).is_err());
    }

    #[test]
    fn bad_peer_values_are_refused_with_a_reason() {
        for bad in ["x=127.0.0.1:1", "0=127.0.0.1:1", "localhost", "1=nope"] {
            assert!(bad.parse::<PeerArg>().is_err(), "{bad}");
        }
    }
}

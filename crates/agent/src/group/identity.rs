//! The identity a host uses in its group's membership protocol: host id,
//! gossip address and a generation that lets a restarted (or wrongly
//! declared dead) agent win over its previous identity.

use std::net::SocketAddr;

use foca::Identity;
use serde::{Deserialize, Serialize};
use switchyard_wire::HostId;

/// One incarnation of a host in the group. The membership library keys
/// members by [`Identity::addr`] (the host id), so at most one identity per
/// host is live; between two identities of the same host, the higher
/// generation wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberId {
    host: u32,
    gossip: SocketAddr,
    generation: u64,
}

impl MemberId {
    /// An identity of `host`, reachable at `gossip`.
    pub fn new(host: HostId, gossip: SocketAddr, generation: u64) -> Self {
        Self {
            host: host.0,
            gossip,
            generation,
        }
    }

    /// The host.
    pub fn host(&self) -> HostId {
        HostId(self.host)
    }

    /// The address the host gossips on, as the host announced it.
    pub fn gossip(&self) -> SocketAddr {
        self.gossip
    }

    /// The generation: agents start at their start time, so a restart wins.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Identity for MemberId {
    type Addr = u32;

    /// After being declared down (falsely, or after a partition), rejoin
    /// at once under the next generation.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> u32 {
        self.host
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The address breaks ties so every member decides alike.
        (self.generation, self.gossip) > (adversary.generation, adversary.gossip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_generation_wins_and_renew_wins() {
        let addr: SocketAddr = ([10, 0, 0, 1], 9172).into();
        let old = MemberId::new(HostId(1), addr, 5);
        let new = MemberId::new(HostId(1), addr, 6);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        assert_eq!(old.renew(), Some(new));
        assert_eq!(old.addr(), 1);
        assert_eq!(MemberId::new(HostId(1), addr, u64::MAX).renew(), None);
    }
}

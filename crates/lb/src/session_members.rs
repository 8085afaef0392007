//! Membership and failure detection among the session-store units, from the SWIM library
//! foca, wrapped sans-I/O like the agent's host groups (`switchyard_agent::group`): the
//! session role feeds it gossip and timeouts and takes the live set for
//! `switchyard_dam::Dam::set_members`.
//!
//! Gossip travels as `GroupGossip` frames (group name [`GROUP`]) on the session port and is
//! accepted only from configured session-store units whose frame sender is the unit the
//! gossip claims to come from. An identity carries a generation (the unit's start time), so
//! a restarted unit supersedes its previous identity at once. Every configured peer that is
//! not live is announced to every [`ANNOUNCE_INTERVAL`]. With the timing below a dead unit
//! is declared down within about 1.5 s.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::{Duration, Instant};

use foca::{
    Codec, Foca, Identity, NoCustomBroadcast, Notification, OwnedNotification, PeriodicParams,
    PostcardCodec, Runtime, Timer,
};
use foca_rand::SeedableRng;
use foca_rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use switchyard_wire::health::GroupGossip;
use switchyard_wire::{SenderId, UnitId};

/// The group name in the units' gossip frames.
pub const GROUP: &str = "session-store";
/// Announcements to configured units that are not live.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
const MAX_PACKET: usize = 1400;
const MAX_TIMERS_PER_CALL: usize = 4096;

/// One incarnation of a unit in the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitMember {
    unit: u32,
    addr: SocketAddr,
    generation: u64,
}

impl Identity for UnitMember {
    type Addr = u32;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> u32 {
        self.unit
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.addr) > (adversary.generation, adversary.addr)
    }
}

#[derive(Debug)]
struct Io {
    now: Instant,
    peers: BTreeMap<u32, SocketAddr>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: BTreeMap<(Instant, u64), Timer<UnitMember>>,
    seq: u64,
    changed: bool,
}

impl Runtime<UnitMember> for Io {
    fn notify(&mut self, notification: Notification<'_, UnitMember>) {
        if matches!(
            notification.to_owned(),
            OwnedNotification::MemberUp(_) | OwnedNotification::MemberDown(_)
        ) {
            self.changed = true;
        }
    }

    fn send_to(&mut self, to: UnitMember, data: &[u8]) {
        // Only to configured addresses: an identity cannot redirect traffic.
        if let Some(&addr) = self.peers.get(&to.unit) {
            self.outbox.push_back((addr, data.to_vec()));
        }
    }

    fn submit_after(&mut self, event: Timer<UnitMember>, after: Duration) {
        let at = self.now.checked_add(after).unwrap_or(self.now);
        self.seq += 1;
        self.timers.insert((at, self.seq), event);
    }
}

/// Why gossip was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipRefused {
    /// Another group's gossip.
    #[error("gossip of group {0:?}")]
    WrongGroup(String),
    /// Undecodable or oversized.
    #[error("malformed gossip: {0}")]
    Malformed(String),
    /// The frame's sender is not the unit the gossip comes from, or not a configured
    /// session-store unit.
    #[error("gossip from sender {0} refused")]
    Sender(SenderId),
    /// The library refused it.
    #[error("gossip refused: {0}")]
    Refused(String),
}

/// The membership of one session-store unit.
pub struct UnitMembership {
    me: UnitId,
    foca: Foca<UnitMember, PostcardCodec, SmallRng, NoCustomBroadcast>,
    io: Io,
    next_announce: Instant,
}

impl std::fmt::Debug for UnitMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitMembership")
            .field("me", &self.me)
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

impl UnitMembership {
    /// Unit `me` (gossiping at `addr`), with the other session-store units `peers`.
    pub fn new(
        me: UnitId,
        addr: SocketAddr,
        peers: &BTreeMap<UnitId, SocketAddr>,
        generation: u64,
        now: Instant,
    ) -> Self {
        let mut config = foca::Config::simple();
        config.probe_period = Duration::from_millis(300);
        config.probe_rtt = Duration::from_millis(100);
        config.num_indirect_probes = NonZeroUsize::MIN.saturating_add(2);
        config.max_transmissions = NonZeroU8::MIN.saturating_add(5);
        config.suspect_to_down_after = Duration::from_millis(600);
        config.remove_down_after = Some(Duration::from_secs(3600));
        config.max_packet_size = NonZeroUsize::MIN.saturating_add(MAX_PACKET - 1);
        config.notify_down_members = true;
        config.periodic_announce = None;
        config.periodic_announce_to_down_members = None;
        config.periodic_gossip = Some(PeriodicParams {
            frequency: Duration::from_millis(100),
            num_members: NonZeroUsize::MIN.saturating_add(2),
        });
        let identity = UnitMember {
            unit: me.0,
            addr,
            generation,
        };
        let seed = (u64::from(me.0) << 32) ^ generation;
        let foca = Foca::new(
            identity,
            config,
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
        );
        let mut membership = Self {
            me,
            foca,
            io: Io {
                now,
                peers: peers
                    .iter()
                    .filter(|(u, _)| **u != me)
                    .map(|(u, a)| (u.0, *a))
                    .collect(),
                outbox: VecDeque::new(),
                timers: BTreeMap::new(),
                seq: 0,
                changed: false,
            },
            next_announce: now,
        };
        membership.announce();
        membership
    }

    /// Live units, this one included, ascending.
    pub fn live(&self) -> Vec<UnitId> {
        let mut live: BTreeSet<UnitId> = self
            .foca
            .iter_members()
            .map(|m| m.id().unit)
            .filter(|u| self.io.peers.contains_key(u))
            .map(UnitId)
            .collect();
        live.insert(self.me);
        live.into_iter().collect()
    }

    /// Whether the live set may have changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.io.changed)
    }

    /// Gossip from `from` (authenticated frame sender).
    pub fn handle_gossip(
        &mut self,
        now: Instant,
        from: SenderId,
        gossip: &GroupGossip,
    ) -> Result<(), GossipRefused> {
        self.io.now = self.io.now.max(now);
        if gossip.group != GROUP {
            return Err(GossipRefused::WrongGroup(gossip.group.clone()));
        }
        if gossip.data.len() > MAX_PACKET {
            return Err(GossipRefused::Malformed("too large".to_owned()));
        }
        let header: foca::Header<UnitMember> = PostcardCodec
            .decode_header(&gossip.data[..])
            .map_err(|e| GossipRefused::Malformed(e.to_string()))?;
        if header.src.unit != from.0 || !self.io.peers.contains_key(&from.0) {
            return Err(GossipRefused::Sender(from));
        }
        self.foca
            .handle_data(&gossip.data, &mut self.io)
            .map_err(|e| GossipRefused::Refused(e.to_string()))
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Instant {
        match self.io.timers.keys().next() {
            Some(&(at, _)) => at.min(self.next_announce),
            None => self.next_announce,
        }
    }

    /// Runs due timers and announcements.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.io.now = self.io.now.max(now);
        for _ in 0..MAX_TIMERS_PER_CALL {
            let Some(entry) = self.io.timers.first_entry() else {
                break;
            };
            if entry.key().0 > self.io.now {
                break;
            }
            let timer = entry.remove();
            if let Err(error) = self.foca.handle_timer(timer, &mut self.io) {
                tracing::debug!(%error, "session-store membership timer failed");
            }
        }
        if self.next_announce <= self.io.now {
            self.announce();
        }
    }

    /// Gossip to send.
    pub fn poll_gossip(&mut self) -> Option<(SocketAddr, GroupGossip)> {
        let (to, data) = self.io.outbox.pop_front()?;
        Some((
            to,
            GroupGossip {
                group: GROUP.to_owned(),
                data,
            },
        ))
    }

    /// Leaves the membership (clean shutdown): the others drop this unit at once.
    pub fn leave(&mut self) {
        if let Err(error) = self.foca.leave_cluster(&mut self.io) {
            tracing::debug!(%error, "leaving the session-store membership failed");
        }
    }

    fn announce(&mut self) {
        let live: BTreeSet<u32> = self.live().iter().map(|u| u.0).collect();
        let targets: Vec<(u32, SocketAddr)> = self
            .io
            .peers
            .iter()
            .filter(|(u, _)| !live.contains(u))
            .map(|(u, a)| (*u, *a))
            .collect();
        for (unit, addr) in targets {
            let to = UnitMember {
                unit,
                addr,
                generation: 0,
            };
            if let Err(error) = self.foca.announce(to, &mut self.io) {
                tracing::debug!(%error, "announce failed");
            }
        }
        self.next_announce = self.io.now + ANNOUNCE_INTERVAL;
    }
}

//! Host groups (spec FIG. 16): hosts that detect each other's failures by
//! gossip, elect a leader, and let the leader send their heartbeats to the
//! LB units as one `ConsolidatedHeartbeat`. Off unless the configuration
//! has a `[[host_groups]]` entry naming the host.
//!
//! Owns the group machine [`HostGroup`] (membership and failure detection
//! from the SWIM library `foca`, wrapped sans-I/O in the style of the
//! health crate: `handle_gossip(now, …)`, `handle_timeout(now)`,
//! `poll_timeout()`, `poll_gossip()`) and the pure [`HeartbeatRelay`] that
//! decides where a host's heartbeats go. It owns no socket and reads no
//! clock: the agent daemon binds the gossip port, seals and opens
//! [`GroupGossip`] frames with the cluster codec, and routes the health
//! protocol's heartbeats through the relay. It does not touch the health
//! and load table or any message other than heartbeats. The relay's rules
//! (what goes where, and what `forward` means) are in [`relay`].
//!
//! Rules:
//! - **Membership** is foca's: a member is *live* while foca holds it
//!   alive or suspect; it is gone once foca declares it down (no answer to
//!   a direct and indirect probes, then `suspect_to_down_after` without a
//!   refutation) or it leaves. With the default timing a dead member is
//!   declared down within about 1.5 s. Only configured hosts are members;
//!   gossip is accepted only when its authenticated frame sender is the
//!   host the gossip claims to come from.
//! - **Leader** = the lowest host id among the live members, this host
//!   included. Every member computes it from its own view, so members agree
//!   as soon as their views agree; no election messages are needed.
//! - **Joining**: a new member announces itself to every configured peer
//!   at once, and every `announce_interval` to each configured peer that is
//!   not live (so lone hosts, restarted hosts and healed partitions find
//!   each other). An identity carries a generation (the agent's start
//!   time), so a restarted agent supersedes its previous identity; one
//!   declared down while alive rejoins under the next generation.

mod identity;
pub mod relay;
mod runtime;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::{Duration, Instant};

use foca::{Codec, Foca, NoCustomBroadcast, OwnedNotification, PeriodicParams, PostcardCodec};
use foca_rand::SeedableRng;
use foca_rand::rngs::SmallRng;
use switchyard_config::Config;
use switchyard_wire::health::{GroupGossip, MAX_GROUP_NAME_LEN};
use switchyard_wire::{HostId, SenderId};

pub use identity::MemberId;
pub use relay::{HeartbeatRelay, RelayMode, RelayRejected, RelaySettings, RelayTo, Relayed};

use runtime::Io;

/// Upper bound on queued [`GroupEvent`]s; the oldest are dropped first.
const MAX_EVENTS: usize = 256;
/// How long foca remembers a member declared down (restarted agents come
/// back under a newer generation, so this only bounds memory).
const REMOVE_DOWN_AFTER: Duration = Duration::from_secs(3600);
/// Timers handled per [`HostGroup::handle_timeout`] call at most (a guard,
/// far above what a group schedules).
const MAX_TIMERS_PER_CALL: usize = 4096;

/// One member of a group as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPeer {
    /// The host.
    pub host: HostId,
    /// Where its agent receives group gossip (host address, `gossip_port`).
    pub gossip: SocketAddr,
    /// Where its agent receives health messages, including members'
    /// heartbeats when it leads (host address, `[agent].listen` port).
    pub agent: SocketAddr,
}

/// Settings of one host's [`HostGroup`]. [`GroupSettings::new`] sets the
/// default timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// The group name (at most [`MAX_GROUP_NAME_LEN`] bytes); gossip of other
    /// groups is refused.
    pub group: String,
    /// This host.
    pub me: GroupPeer,
    /// The other configured members (an entry for `me.host` is ignored).
    pub peers: Vec<GroupPeer>,
    /// First generation of this host's identity. Daemons pass their start
    /// time (e.g. Unix milliseconds) so a restarted agent supersedes its
    /// previous identity at once.
    pub generation: u64,
    /// Seed of the membership library's random choices (probe order, gossip
    /// targets); [`GroupSettings::new`] derives it from host and
    /// generation, tests fix it.
    pub rng_seed: u64,
    /// One member is probed per period. Default 300 ms.
    pub probe_period: Duration,
    /// Wait for a direct ack before asking others to probe. Default 100 ms;
    /// must be shorter than `probe_period`.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly. Default 3.
    pub indirect_probes: usize,
    /// A suspect member that does not refute is declared down after this.
    /// Default 600 ms.
    pub suspect_to_down_after: Duration,
    /// Period of gossip rounds that spread membership updates. Default 100 ms.
    pub gossip_interval: Duration,
    /// Members per gossip round. Default 3.
    pub gossip_fanout: usize,
    /// Times each membership update is piggybacked. Default 6.
    pub max_transmissions: u8,
    /// Period of announcements to configured peers that are not live.
    /// Default 1 s.
    pub announce_interval: Duration,
    /// Largest gossip datagram produced and accepted. Default 1400 bytes.
    pub max_packet_size: usize,
}

impl GroupSettings {
    /// Settings with the default timing: a dead member is declared down
    /// within about 1.5 s (probe period + suspicion), and the others agree
    /// on a new leader shortly after.
    pub fn new(
        group: impl Into<String>,
        me: GroupPeer,
        peers: Vec<GroupPeer>,
        generation: u64,
    ) -> Self {
        Self {
            group: group.into(),
            rng_seed: seed_for(me.host, generation),
            me,
            peers,
            generation,
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(100),
            indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(600),
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            max_transmissions: 6,
            announce_interval: Duration::from_secs(1),
            max_packet_size: 1400,
        }
    }

    /// The settings of host `host_name` if the configuration puts it in a
    /// host group, else `None` (groups are off by default). Members' gossip
    /// addresses are their host address with the group's `gossip_port`;
    /// their agent addresses use the `[agent].listen` port.
    pub fn from_config(config: &Config, host_name: &str, generation: u64) -> Option<Self> {
        let group = config.host_group_of(host_name)?;
        let agent_port = config.agent_settings().listen.port();
        let peer = |name: &str| {
            let (_, host) = config.host_by_name(name)?;
            let ip = host.address.ip();
            Some(GroupPeer {
                host: host.id,
                gossip: SocketAddr::new(ip, group.gossip_port),
                agent: SocketAddr::new(ip, agent_port),
            })
        };
        let me = peer(host_name)?;
        let peers = group
            .hosts
            .iter()
            .filter(|name| name.as_str() != host_name)
            .filter_map(|name| peer(name))
            .collect();
        Some(Self::new(group.name.clone(), me, peers, generation))
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), GroupError> {
        let bad = |what: &'static str| Err(GroupError::InvalidSettings(what));
        if self.group.len() > MAX_GROUP_NAME_LEN {
            return bad("group name is longer than 63 bytes");
        }
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return bad("probe_rtt must be non-zero and shorter than probe_period");
        }
        if self.suspect_to_down_after.is_zero()
            || self.gossip_interval.is_zero()
            || self.announce_interval.is_zero()
        {
            return bad(
                "suspect_to_down_after, gossip_interval and announce_interval must be non-zero",
            );
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 || self.max_transmissions == 0 {
            return bad("indirect_probes, gossip_fanout and max_transmissions must be non-zero");
        }
        if !(256..=switchyard_wire::frame::MAX_UDP_PAYLOAD / 2).contains(&self.max_packet_size) {
            return bad("max_packet_size must be between 256 and 32500 bytes");
        }
        let mut seen = BTreeSet::new();
        for peer in &self.peers {
            if peer.host != self.me.host && !seen.insert(peer.host) {
                return bad("a host is listed twice among the peers");
            }
        }
        Ok(())
    }

    fn foca_config(&self) -> Result<foca::Config, GroupError> {
        let nonzero =
            |n: usize| NonZeroUsize::new(n).ok_or(GroupError::InvalidSettings("a count is zero"));
        let mut config = foca::Config::simple();
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.num_indirect_probes = nonzero(self.indirect_probes)?;
        config.max_transmissions = NonZeroU8::new(self.max_transmissions)
            .ok_or(GroupError::InvalidSettings("max_transmissions is zero"))?;
        config.suspect_to_down_after = self.suspect_to_down_after;
        config.remove_down_after = Some(REMOVE_DOWN_AFTER);
        config.max_packet_size = nonzero(self.max_packet_size)?;
        config.notify_down_members = true;
        // Announcing is ours (to configured peers only, see `announce`).
        config.periodic_announce = None;
        config.periodic_announce_to_down_members = None;
        config.periodic_gossip = Some(PeriodicParams {
            frequency: self.gossip_interval,
            num_members: nonzero(self.gossip_fanout)?,
        });
        Ok(config)
    }
}

/// A deterministic per-host seed (SplitMix64 of host id and generation).
fn seed_for(host: HostId, generation: u64) -> u64 {
    let mut z = (u64::from(host.0) << 32 ^ generation).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Settings that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// A setting is out of range; the text says which.
    #[error("invalid host group settings: {0}")]
    InvalidSettings(&'static str),
}

/// Why a gossip datagram was not taken. Daemons count these and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipRejected {
    /// The frame names another group.
    #[error("gossip for group {0:?}, not ours")]
    WrongGroup(String),
    /// Larger than `max_packet_size`.
    #[error("gossip datagram of {0} bytes is too large")]
    TooLarge(usize),
    /// The membership header does not decode.
    #[error("malformed gossip: {0}")]
    Malformed(String),
    /// The authenticated frame sender is not the member the gossip is from.
    #[error("gossip from sender {from} claims to come from {claimed}")]
    ForgedSender {
        /// The frame's sender.
        from: SenderId,
        /// The member named in the gossip.
        claimed: HostId,
    },
    /// The gossip comes from a host that is not a configured member.
    #[error("gossip from {0}, which is not a member of the group")]
    NotAMember(HostId),
    /// The membership protocol refused it (the text says why).
    #[error("gossip refused by the membership protocol: {0}")]
    Refused(String),
    /// This host left the group.
    #[error("this host left the group")]
    Left,
}

/// A change worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// A member became live.
    MemberUp(HostId),
    /// A member was declared down (or left).
    MemberDown(HostId),
    /// The leader changed (including to or from this host).
    LeaderChanged {
        /// The previous leader.
        from: HostId,
        /// The new leader.
        to: HostId,
    },
    /// This host was declared down while alive and rejoined under a new
    /// generation.
    Rejoined {
        /// The new generation.
        generation: u64,
    },
}

/// Counters for `ctl` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCounters {
    /// Gossip datagrams accepted.
    pub gossip_received: u64,
    /// Gossip datagrams refused (see [`GossipRejected`]).
    pub gossip_rejected: u64,
    /// Gossip datagrams handed out by [`HostGroup::poll_gossip`].
    pub gossip_sent: u64,
    /// Sends the membership library addressed to unconfigured hosts
    /// (dropped).
    pub unroutable: u64,
    /// Announcements to configured peers.
    pub announces: u64,
    /// Timer events the membership library refused.
    pub timer_errors: u64,
    /// Leader changes seen by this host.
    pub leader_changes: u64,
}

/// A snapshot of the group as this host sees it, for [`HeartbeatRelay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// This host.
    pub me: HostId,
    /// The leader: the lowest id in `live`.
    pub leader: HostId,
    /// Live members, this host included.
    pub live: BTreeSet<HostId>,
}

impl GroupView {
    /// The view of a host without a group (or alone in it).
    pub fn alone(me: HostId) -> Self {
        Self {
            me,
            leader: me,
            live: BTreeSet::from([me]),
        }
    }

    /// A view from a set of live members (this host is added); the leader
    /// is the lowest id.
    pub fn from_live(me: HostId, live: impl IntoIterator<Item = HostId>) -> Self {
        let mut live: BTreeSet<HostId> = live.into_iter().collect();
        live.insert(me);
        let leader = live.first().copied().unwrap_or(me);
        Self { me, leader, live }
    }

    /// Whether no other member is live.
    pub fn is_alone(&self) -> bool {
        self.live.len() <= 1
    }

    /// Whether this host leads.
    pub fn is_leader(&self) -> bool {
        self.leader == self.me
    }
}

type Membership = Foca<MemberId, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// One host's membership in its group. See the [module docs](self).
pub struct HostGroup {
    settings: GroupSettings,
    foca: Membership,
    io: Io,
    agents: BTreeMap<HostId, SocketAddr>,
    now: Instant,
    next_announce: Instant,
    leader: HostId,
    left: bool,
    events: VecDeque<GroupEvent>,
    counters: GroupCounters,
}

impl fmt::Debug for HostGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostGroup")
            .field("group", &self.settings.group)
            .field("identity", self.foca.identity())
            .field("members", &self.members())
            .field("leader", &self.leader)
            .field("left", &self.left)
            .field("pending_timers", &self.io.pending_timers())
            .finish_non_exhaustive()
    }
}

impl HostGroup {
    /// Joins the group: announces this host to every configured peer (the
    /// datagrams wait in [`Self::poll_gossip`]).
    pub fn new(settings: GroupSettings, now: Instant) -> Result<Self, GroupError> {
        settings.validate()?;
        let config = settings.foca_config()?;
        let me = settings.me;
        let peers: Vec<GroupPeer> = settings
            .peers
            .iter()
            .copied()
            .filter(|p| p.host != me.host)
            .collect();
        let gossip = peers.iter().map(|p| (p.host, p.gossip)).collect();
        let mut agents: BTreeMap<HostId, SocketAddr> =
            peers.iter().map(|p| (p.host, p.agent)).collect();
        agents.insert(me.host, me.agent);
        let identity = MemberId::new(me.host, me.gossip, settings.generation);
        let rng = SmallRng::seed_from_u64(settings.rng_seed);
        let foca = Foca::new(identity, config, rng, PostcardCodec);
        let mut group = Self {
            next_announce: now,
            settings,
            foca,
            io: Io::new(now, gossip),
            agents,
            now,
            leader: me.host,
            left: false,
            events: VecDeque::new(),
            counters: GroupCounters::default(),
        };
        group.announce();
        Ok(group)
    }

    /// The group name.
    pub fn name(&self) -> &str {
        &self.settings.group
    }

    /// This host.
    pub fn me(&self) -> HostId {
        self.settings.me.host
    }

    /// The settings.
    pub fn settings(&self) -> &GroupSettings {
        &self.settings
    }

    /// This host's current identity (its generation grows on a rejoin).
    pub fn identity(&self) -> &MemberId {
        self.foca.identity()
    }

    /// Counters.
    pub fn counters(&self) -> GroupCounters {
        GroupCounters {
            unroutable: self.io.unroutable,
            ..self.counters.clone()
        }
    }

    /// The agent address of `host` (where a member sends its heartbeats to
    /// the leader), if it is a configured member.
    pub fn agent_addr(&self, host: HostId) -> Option<SocketAddr> {
        self.agents.get(&host).copied()
    }

    /// Live members, this host included, in id order.
    pub fn members(&self) -> BTreeSet<HostId> {
        let mut live: BTreeSet<HostId> = self
            .foca
            .iter_members()
            .map(|m| m.id().host())
            .filter(|h| self.io.peers.contains_key(h))
            .collect();
        live.insert(self.me());
        live
    }

    /// Whether no other member is live.
    pub fn is_alone(&self) -> bool {
        self.members().len() <= 1
    }

    /// The leader: the lowest host id among the live members, this host
    /// included. Deterministic, so members with the same view agree.
    pub fn leader(&self) -> HostId {
        self.leader
    }

    /// Whether this host leads its group.
    pub fn is_leader(&self) -> bool {
        self.leader == self.me()
    }

    /// The group as this host sees it, for [`HeartbeatRelay`].
    pub fn view(&self) -> GroupView {
        GroupView::from_live(self.me(), self.members())
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.io.now = self.now;
    }

    /// Handles a [`GroupGossip`] from an authenticated frame sent by `from`.
    pub fn handle_gossip(
        &mut self,
        now: Instant,
        from: SenderId,
        gossip: &GroupGossip,
    ) -> Result<(), GossipRejected> {
        self.advance(now);
        let result = self.accept(from, gossip);
        match &result {
            Ok(()) => self.counters.gossip_received += 1,
            Err(reason) => {
                self.counters.gossip_rejected += 1;
                tracing::trace!(group = %self.settings.group, %reason, "gossip refused");
            }
        }
        self.after_call();
        result
    }

    fn accept(&mut self, from: SenderId, gossip: &GroupGossip) -> Result<(), GossipRejected> {
        if self.left {
            return Err(GossipRejected::Left);
        }
        if gossip.group != self.settings.group {
            return Err(GossipRejected::WrongGroup(gossip.group.clone()));
        }
        let data = gossip.data.as_slice();
        if data.len() > self.settings.max_packet_size {
            return Err(GossipRejected::TooLarge(data.len()));
        }
        let header: foca::Header<MemberId> = PostcardCodec
            .decode_header(data)
            .map_err(|e| GossipRejected::Malformed(e.to_string()))?;
        let claimed = header.src.host();
        if SenderId::from(claimed) != from {
            return Err(GossipRejected::ForgedSender { from, claimed });
        }
        if !self.io.peers.contains_key(&claimed) {
            return Err(GossipRejected::NotAMember(claimed));
        }
        self.foca
            .handle_data(data, &mut self.io)
            .map_err(|e| GossipRejected::Refused(e.to_string()))
    }

    /// When [`Self::handle_timeout`] should run next (`None` after
    /// [`Self::leave`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        match self.io.next_deadline() {
            Some(at) => Some(at.min(self.next_announce)),
            None => Some(self.next_announce),
        }
    }

    /// Runs the membership timers due at `now` (probes, suspicion, gossip
    /// rounds) and the periodic announcements.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.left {
            return;
        }
        for _ in 0..MAX_TIMERS_PER_CALL {
            let Some(timer) = self.io.pop_due(self.now) else {
                break;
            };
            if let Err(error) = self.foca.handle_timer(timer, &mut self.io) {
                self.counters.timer_errors += 1;
                tracing::debug!(group = %self.settings.group, %error, "membership timer failed");
            }
        }
        if self.next_announce <= self.now {
            self.announce();
        }
        self.after_call();
    }

    /// Announces this host to every configured peer that is not live.
    fn announce(&mut self) {
        let live = self.members();
        let targets: Vec<GroupPeer> = self
            .settings
            .peers
            .iter()
            .filter(|p| p.host != self.me() && !live.contains(&p.host))
            .copied()
            .collect();
        for peer in targets {
            // Generation 0: a peer accepts an announcement addressed to any
            // identity of its host.
            let to = MemberId::new(peer.host, peer.gossip, 0);
            match self.foca.announce(to, &mut self.io) {
                Ok(()) => self.counters.announces += 1,
                Err(error) => {
                    tracing::debug!(group = %self.settings.group, %error, "announce failed");
                }
            }
        }
        self.next_announce = self
            .now
            .checked_add(self.settings.announce_interval)
            .unwrap_or(self.now);
    }

    /// The next gossip datagram to seal (as a [`GroupGossip`] message, sender
    /// this host) and send to the address.
    pub fn poll_gossip(&mut self) -> Option<(SocketAddr, GroupGossip)> {
        let (to, data) = self.io.outbox.pop_front()?;
        self.counters.gossip_sent += 1;
        Some((
            to,
            GroupGossip {
                group: self.settings.group.clone(),
                data,
            },
        ))
    }

    /// The next membership or leadership change, for logs.
    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// Leaves the group (clean shutdown): tells the members, who drop this
    /// host at once and elect a new leader if it led. Afterwards the
    /// machine is inert; drain [`Self::poll_gossip`] one last time.
    pub fn leave(&mut self, now: Instant) {
        self.advance(now);
        if self.left {
            return;
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.io) {
            tracing::debug!(group = %self.settings.group, %error, "leaving the group failed");
        }
        self.left = true;
        self.after_call();
    }

    /// Turns the library's notifications into events and recomputes the
    /// leader.
    fn after_call(&mut self) {
        while let Some(notification) = self.io.notifications.pop_front() {
            let event = match notification {
                OwnedNotification::MemberUp(id) => GroupEvent::MemberUp(id.host()),
                OwnedNotification::MemberDown(id) => GroupEvent::MemberDown(id.host()),
                OwnedNotification::Rejoin(id) => GroupEvent::Rejoined {
                    generation: id.generation(),
                },
                OwnedNotification::Defunct => {
                    // Only when the generation cannot grow any more.
                    tracing::warn!(group = %self.settings.group, "declared down and cannot rejoin");
                    continue;
                }
                _ => continue,
            };
            self.push_event(event);
        }
        let leader = if self.left {
            self.me()
        } else {
            self.members().first().copied().unwrap_or(self.me())
        };
        if leader != self.leader {
            let from = std::mem::replace(&mut self.leader, leader);
            self.counters.leader_changes += 1;
            tracing::info!(group = %self.settings.group, %from, to = %leader, "group leader changed");
            self.push_event(GroupEvent::LeaderChanged { from, to: leader });
        }
    }

    fn push_event(&mut self, event: GroupEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

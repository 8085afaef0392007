//! Where a grouped host's heartbeats go (spec FIG. 16). Pure: the caller
//! passes the time, the group as this host sees it ([`GroupView`]) and the
//! messages; the relay returns where each goes.
//!
//! The agent daemon routes every message [`HostProtocol::poll_transmit`]
//! returns through [`HeartbeatRelay::route`], and hands heartbeats that
//! members send to this host's agent address to
//! [`HeartbeatRelay::handle_member_heartbeat`]. Only this host's own
//! heartbeats are rerouted; row changes, snapshots, postulates and goodbyes
//! always go straight to the units.
//!
//! Rules, by the host's role ([`RelayMode`]):
//! - **Direct** (no other member is live — the group is off, still
//!   forming, or partitioned away): heartbeats go to the units unchanged.
//! - **Member** (another host leads): one copy of each heartbeat goes to
//!   the leader's agent address instead of to the units, with
//!   `forward: true`. The health protocol emits one heartbeat per unit per
//!   interval; the copies after the first of an interval are dropped.
//! - **Lead**: each own heartbeat for a unit becomes one
//!   `ConsolidatedHeartbeat { leader: me, heartbeats }` for that unit, so
//!   every unit receives exactly one per heartbeat interval. `heartbeats`
//!   holds the leader's own heartbeat and the latest heartbeat of each live
//!   member received within `member_max_age`, in host id order. Members
//!   that the group declares down, or whose heartbeats stop arriving, are
//!   left out and age out at the units (`host_dead_after`).
//!
//! `forward`: the spec lets a member mark a heartbeat "forward" to ask the
//! leader to pass it on even when membership did not change. This relay
//! always consolidates every live member's latest heartbeat each interval
//! (the units' caches need periodic heartbeats for liveness), so `forward`
//! marks a heartbeat as *addressed to the leader for relaying*: members set
//! it on every heartbeat they send to the leader, and the leader relays
//! only heartbeats that carry it (a plain heartbeat arriving at an agent is
//! misrouted and refused). The flag is kept as is inside the consolidation;
//! units ignore it.
//!
//! [`HostProtocol::poll_transmit`]: switchyard_health::HostProtocol::poll_transmit

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use switchyard_health::Transmit;
use switchyard_wire::health::{ConsolidatedHeartbeat, Heartbeat};
use switchyard_wire::{HostId, Message, SenderId, UnitId};

use super::GroupView;

/// Settings of a [`HeartbeatRelay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// This host (heartbeats of other identities pass through unchanged).
    pub me: HostId,
    /// The health protocol's heartbeat interval.
    pub heartbeat_interval: Duration,
    /// A member's heartbeat is relayed for this long after it arrived
    /// (default 3 heartbeat intervals: two lost heartbeats are tolerated).
    pub member_max_age: Duration,
}

impl RelaySettings {
    /// Settings with the default `member_max_age`.
    pub fn new(me: HostId, heartbeat_interval: Duration) -> Self {
        Self {
            me,
            heartbeat_interval,
            member_max_age: heartbeat_interval.saturating_mul(3),
        }
    }
}

/// What this host does with its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Send them to the units (no other member is live).
    Direct,
    /// Consolidate the group's heartbeats and send them to the units.
    Lead,
    /// Send them to the leader.
    Member {
        /// The leader.
        leader: HostId,
    },
}

/// A destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTo {
    /// An LB unit (as the health protocol addressed it).
    Unit(UnitId),
    /// A group member's agent address (see
    /// [`super::HostGroup::agent_addr`]).
    Host(HostId),
}

/// A message to seal (sender: this host) and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// Where it goes.
    pub to: RelayTo,
    /// The message.
    pub message: Message,
}

/// Why a member's heartbeat was not taken. Daemons count these and go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayRejected {
    /// The authenticated frame sender is not the heartbeat's host.
    #[error("heartbeat of {host} sent by {from}")]
    ForgedSender {
        /// The frame's sender.
        from: SenderId,
        /// The heartbeat's host.
        host: HostId,
    },
    /// A heartbeat about this host itself.
    #[error("heartbeat about this host")]
    AboutMe,
    /// A heartbeat without `forward`: not addressed to a leader.
    #[error("heartbeat of {0} is not marked for forwarding")]
    NotForwarded(HostId),
    /// The host is not a live member of the group.
    #[error("{0} is not a live member of the group")]
    NotAMember(HostId),
}

/// Counters for `ctl` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayCounters {
    /// Own heartbeats sent to units directly.
    pub direct: u64,
    /// Own heartbeats sent to the leader.
    pub to_leader: u64,
    /// Consolidated heartbeats sent (one per unit per interval).
    pub consolidated: u64,
    /// Members' heartbeats accepted.
    pub member_heartbeats: u64,
    /// Members' heartbeats refused.
    pub rejected: u64,
}

/// Routes a grouped host's heartbeats. See the [module docs](self).
#[derive(Debug)]
pub struct HeartbeatRelay {
    settings: RelaySettings,
    now: Option<Instant>,
    /// Latest heartbeat of each member and when it arrived.
    latest: BTreeMap<HostId, (Instant, Heartbeat)>,
    /// The last own heartbeat sent to a leader: (when, leader, heartbeat).
    last_to_leader: Option<(Instant, HostId, Heartbeat)>,
    counters: RelayCounters,
}

impl HeartbeatRelay {
    /// A relay holding no member heartbeats.
    pub fn new(settings: RelaySettings) -> Self {
        Self {
            settings,
            now: None,
            latest: BTreeMap::new(),
            last_to_leader: None,
            counters: RelayCounters::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RelaySettings {
        &self.settings
    }

    /// Counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// This host's role in `view`.
    pub fn mode(&self, view: &GroupView) -> RelayMode {
        if view.is_alone() {
            RelayMode::Direct
        } else if view.leader == self.settings.me {
            RelayMode::Lead
        } else {
            RelayMode::Member {
                leader: view.leader,
            }
        }
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |t| t.max(now));
        self.now = Some(now);
        now
    }

    /// Routes one message from the health protocol (addressed to a unit).
    /// Returns `None` when it is not to be sent (an extra copy of a
    /// heartbeat already sent to the leader).
    pub fn route(
        &mut self,
        now: Instant,
        view: &GroupView,
        transmit: Transmit<UnitId>,
    ) -> Option<Relayed> {
        let now = self.advance(now);
        let direct = |message| {
            Some(Relayed {
                to: RelayTo::Unit(transmit.to),
                message,
            })
        };
        let hb = match transmit.message {
            Message::Heartbeat(hb) if hb.host == self.settings.me => hb,
            other => return direct(other),
        };
        self.prune(now, view);
        match self.mode(view) {
            RelayMode::Direct => {
                self.counters.direct += 1;
                direct(Message::from(hb))
            }
            RelayMode::Lead => {
                let heartbeats = self.consolidate(now, view, hb);
                self.counters.consolidated += 1;
                direct(Message::from(ConsolidatedHeartbeat {
                    leader: self.settings.me,
                    heartbeats,
                }))
            }
            RelayMode::Member { leader } => {
                let hb = Heartbeat {
                    forward: true,
                    ..hb
                };
                let half = self.settings.heartbeat_interval / 2;
                if let Some((at, to, last)) = &self.last_to_leader
                    && *to == leader
                    && *last == hb
                    && now.saturating_duration_since(*at) < half
                {
                    return None;
                }
                self.last_to_leader = Some((now, leader, hb.clone()));
                self.counters.to_leader += 1;
                Some(Relayed {
                    to: RelayTo::Host(leader),
                    message: Message::from(hb),
                })
            }
        }
    }

    /// Takes a heartbeat a member sent to this host's agent address, from
    /// an authenticated frame of `from`. Kept even while this host does not
    /// lead, so a new leader has its members' heartbeats at once.
    pub fn handle_member_heartbeat(
        &mut self,
        now: Instant,
        view: &GroupView,
        from: SenderId,
        hb: Heartbeat,
    ) -> Result<(), RelayRejected> {
        let now = self.advance(now);
        let result = if SenderId::from(hb.host) != from {
            Err(RelayRejected::ForgedSender {
                from,
                host: hb.host,
            })
        } else if hb.host == self.settings.me {
            Err(RelayRejected::AboutMe)
        } else if !hb.forward {
            Err(RelayRejected::NotForwarded(hb.host))
        } else if !view.live.contains(&hb.host) {
            Err(RelayRejected::NotAMember(hb.host))
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                self.counters.member_heartbeats += 1;
                self.latest.insert(hb.host, (now, hb));
            }
            Err(_) => self.counters.rejected += 1,
        }
        result
    }

    /// The members whose heartbeats the leader would relay at `now`
    /// (this host excluded), in id order.
    pub fn relayed_members(&self, now: Instant, view: &GroupView) -> Vec<HostId> {
        self.latest
            .iter()
            .filter(|(host, (at, _))| self.fresh(now, view, **host, *at))
            .map(|(host, _)| *host)
            .collect()
    }

    fn fresh(&self, now: Instant, view: &GroupView, host: HostId, at: Instant) -> bool {
        host != self.settings.me
            && view.live.contains(&host)
            && now.saturating_duration_since(at) <= self.settings.member_max_age
    }

    /// Forgets heartbeats of members that are down or silent.
    fn prune(&mut self, now: Instant, view: &GroupView) {
        let keep: Vec<HostId> = self.relayed_members(now, view);
        self.latest.retain(|host, _| keep.contains(host));
    }

    fn consolidate(&self, now: Instant, view: &GroupView, own: Heartbeat) -> Vec<Heartbeat> {
        let mut heartbeats: Vec<Heartbeat> = self
            .latest
            .iter()
            .filter(|(host, (at, _))| self.fresh(now, view, **host, *at))
            .map(|(_, (_, hb))| hb.clone())
            .collect();
        let at = heartbeats.partition_point(|hb| hb.host < own.host);
        heartbeats.insert(at, own);
        heartbeats
    }
}

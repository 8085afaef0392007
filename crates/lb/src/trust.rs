//! Who may speak to a unit's health cache: the hosts (`pools.hosts`) and units
//! (`cluster.units`) of the configuration, and for consolidated heartbeats the
//! members of the leader's `[[host_groups]]` entry.
//!
//! Every holder of the cluster secret can seal a datagram under any sender id, so the
//! frame's authentication alone says "someone in the cluster", not "this host". The
//! cache checks that a host only reports for itself; this check, made by the health
//! service before the cache sees a message, keeps ids the configuration does not name
//! out of the cache altogether and stops a group leader from speaking for hosts outside
//! its group. It limits what a misbehaving or misconfigured agent can do; it is not a
//! defence against a holder of the secret (see docs/ARCHITECTURE.md, "Trust model").
//!
//! Refusals are counted by reason in the service's ignored counters:
//! - `unknown-host`: a host's message (heartbeat, row change, snapshot, goodbye,
//!   postulate, consolidated heartbeat) names a host the configuration does not have;
//! - `unknown-sender`: any other message whose frame's sender id is neither a
//!   configured host nor a unit;
//! - `unknown-unit`: an allotment request from a sender that is not a configured unit;
//! - `not-a-member`: one member heartbeat of a consolidated heartbeat, for a host that
//!   is not in the leader's host group (the others are kept).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use switchyard_config::Config;
use switchyard_wire::health::ConsolidatedHeartbeat;
use switchyard_wire::{HostId, Message, SenderId, UnitId};

/// The configured hosts, units and host groups. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMembers {
    hosts: BTreeSet<HostId>,
    units: BTreeSet<UnitId>,
    /// Each grouped host's group, by member.
    groups: BTreeMap<HostId, Arc<BTreeSet<HostId>>>,
}

/// What to do with one authenticated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Hand it to the cache as it is.
    Admit,
    /// Hand this instead: a consolidated heartbeat without the member heartbeats of
    /// hosts outside the leader's group (`dropped` of them).
    Filtered {
        /// The message with the admissible members only.
        message: Box<Message>,
        /// Member heartbeats left out.
        dropped: u64,
    },
    /// Ignore it, for this reason (a counter label).
    Refuse(&'static str),
}

impl ClusterMembers {
    /// Hosts, units and groups by id.
    pub fn new(
        hosts: impl IntoIterator<Item = HostId>,
        units: impl IntoIterator<Item = UnitId>,
        groups: impl IntoIterator<Item = Vec<HostId>>,
    ) -> Self {
        let mut by_member = BTreeMap::new();
        for group in groups {
            let members: Arc<BTreeSet<HostId>> = Arc::new(group.into_iter().collect());
            for host in members.iter() {
                by_member.insert(*host, Arc::clone(&members));
            }
        }
        Self {
            hosts: hosts.into_iter().collect(),
            units: units.into_iter().collect(),
            groups: by_member,
        }
    }

    /// Everything `config` names.
    pub fn from_config(config: &Config) -> Self {
        let groups = config.host_groups.iter().map(|g| {
            g.hosts
                .iter()
                .filter_map(|name| config.host_by_name(name))
                .map(|(_, h)| h.id)
                .collect()
        });
        Self::new(
            config
                .pools
                .iter()
                .flat_map(|p| p.hosts.iter().map(|h| h.id)),
            config.cluster.units.iter().map(|u| u.id),
            groups,
        )
    }

    /// Whether `host` is a configured host.
    pub fn is_host(&self, host: HostId) -> bool {
        self.hosts.contains(&host)
    }

    /// Whether `unit` is a configured unit.
    pub fn is_unit(&self, unit: UnitId) -> bool {
        self.units.contains(&unit)
    }

    fn is_sender(&self, sender: SenderId) -> bool {
        self.is_host(HostId(sender.0)) || self.is_unit(UnitId(sender.0))
    }

    /// Whether `member` may be in a consolidated heartbeat `leader` sends.
    fn may_forward(&self, leader: HostId, member: HostId) -> bool {
        member == leader
            || self
                .groups
                .get(&leader)
                .is_some_and(|group| group.contains(&member))
    }

    /// What to do with `message`, authenticated as coming from `sender`.
    pub fn admit(&self, sender: SenderId, message: &Message) -> Admission {
        let host = match message {
            Message::Heartbeat(m) => Some(m.host),
            Message::RowChange(m) => Some(m.host),
            Message::SendTableSnapshot(m) => Some(m.host),
            Message::Goodbye(m) => Some(m.host),
            Message::PostulateTableState(m) => Some(m.host),
            Message::ConsolidatedHeartbeat(c) => Some(c.leader),
            Message::DirectiveReply(m) => Some(m.host),
            Message::AllotmentRequest(_) | Message::AffinityAllotmentRequest(_)
                if !self.is_unit(UnitId(sender.0)) =>
            {
                return Admission::Refuse("unknown-unit");
            }
            _ => None,
        };
        if host.is_some_and(|h| !self.is_host(h)) {
            return Admission::Refuse("unknown-host");
        }
        if !self.is_sender(sender) {
            return Admission::Refuse("unknown-sender");
        }
        match message {
            Message::ConsolidatedHeartbeat(c) => self.filter_members(c),
            // The cache checks that a host's message comes from that host, and refuses
            // the kinds a unit does not take.
            _ => Admission::Admit,
        }
    }

    fn filter_members(&self, c: &ConsolidatedHeartbeat) -> Admission {
        let admissible = |hb: &&switchyard_wire::health::Heartbeat| {
            self.is_host(hb.host) && self.may_forward(c.leader, hb.host)
        };
        let kept = c.heartbeats.iter().filter(admissible).count();
        if kept == c.heartbeats.len() {
            return Admission::Admit;
        }
        let heartbeats = c.heartbeats.iter().filter(admissible).cloned().collect();
        Admission::Filtered {
            message: Box::new(Message::from(ConsolidatedHeartbeat {
                leader: c.leader,
                heartbeats,
            })),
            dropped: (c.heartbeats.len() - kept) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_wire::health::{ContentCheck, Goodbye, Heartbeat};

    use super::*;

    fn members() -> ClusterMembers {
        ClusterMembers::new(
            [HostId(101), HostId(102), HostId(103)],
            [UnitId(1)],
            [vec![HostId(101), HostId(102)]],
        )
    }

    fn heartbeat(host: u32) -> Heartbeat {
        Heartbeat {
            host: HostId(host),
            check: ContentCheck::Table {
                generation: 1,
                digest: 0,
            },
            name: None,
            address: None,
            forward: false,
        }
    }

    #[test]
    fn unconfigured_senders_and_hosts_are_refused() {
        let m = members();
        let hb = |h| Message::from(heartbeat(h));
        assert_eq!(m.admit(SenderId(101), &hb(101)), Admission::Admit);
        assert_eq!(
            m.admit(SenderId(999), &hb(999)),
            Admission::Refuse("unknown-host")
        );
        // An unconfigured sender impersonating a configured host.
        assert_eq!(
            m.admit(SenderId(999), &hb(101)),
            Admission::Refuse("unknown-sender")
        );
        // A configured sender naming an unconfigured host.
        assert_eq!(
            m.admit(SenderId(101), &hb(999)),
            Admission::Refuse("unknown-host")
        );
        let bye = Message::from(Goodbye { host: HostId(998) });
        assert_eq!(
            m.admit(SenderId(1), &bye),
            Admission::Refuse("unknown-host")
        );
    }

    #[test]
    fn only_configured_units_get_allotments() {
        use switchyard_wire::allotment::{
            AffinityAllotmentRequest, AllotmentRequest, AllotmentScheme,
        };
        let m = members();
        let request = AllotmentRequest {
            request_id: 1,
            vip: "198.51.100.10:80".parse().expect("vip"),
            protocol: switchyard_wire::Protocol::Tcp,
            info: String::new(),
            scheme: AllotmentScheme::Percentages,
            wanted_tokens: 0,
        };
        let with_affinity = Message::from(AffinityAllotmentRequest {
            request: request.clone(),
        });
        for message in [Message::from(request), with_affinity] {
            assert_eq!(m.admit(SenderId(1), &message), Admission::Admit);
            // A configured host is not a unit.
            assert_eq!(
                m.admit(SenderId(101), &message),
                Admission::Refuse("unknown-unit")
            );
        }
    }

    #[test]
    fn consolidated_heartbeats_keep_only_the_leaders_group() {
        let m = members();
        let consolidated = |leader, hosts: &[u32]| {
            Message::from(ConsolidatedHeartbeat {
                leader: HostId(leader),
                heartbeats: hosts.iter().map(|h| heartbeat(*h)).collect(),
            })
        };
        assert_eq!(
            m.admit(SenderId(101), &consolidated(101, &[101, 102])),
            Admission::Admit
        );
        assert_eq!(
            m.admit(SenderId(101), &consolidated(101, &[101, 103, 102, 999])),
            Admission::Filtered {
                message: Box::new(consolidated(101, &[101, 102])),
                dropped: 2,
            }
        );
        // A host in no group forwards nobody but itself.
        assert_eq!(
            m.admit(SenderId(103), &consolidated(103, &[103, 101])),
            Admission::Filtered {
                message: Box::new(consolidated(103, &[103])),
                dropped: 1,
            }
        );
        assert_eq!(
            m.admit(SenderId(101), &consolidated(999, &[101])),
            Admission::Refuse("unknown-host")
        );
    }
}

//! End to end with the real health protocol and consolidated caches: hosts
//! in a group route their heartbeats through the relay, gossip over the
//! simulated network, and two LB units' caches must keep every live host
//! alive, across a leader failure, while the dead leader ages out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_health::{CacheSettings, ConsolidatedCache, HostProtocol, HostSettings};
use switchyard_wire::health::{AppStatus, Health};
use switchyard_wire::{AppId, HostId, Message, Protocol, SenderId, UnitId};

use super::sim::Net;
use crate::group::{HeartbeatRelay, RelaySettings, RelayTo};

const UNITS: [UnitId; 2] = [UnitId(100), UnitId(101)];
const SECOND: Duration = Duration::from_secs(1);

/// What a unit received, for the assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Consolidated { leader: HostId, hosts: Vec<u32> },
    Heartbeat(HostId),
}

struct Agent {
    protocol: HostProtocol,
    relay: HeartbeatRelay,
}

struct World {
    net: Net,
    agents: BTreeMap<HostId, Agent>,
    units: Vec<ConsolidatedCache>,
    seen: Vec<(Duration, UnitId, Seen)>,
    t0: Instant,
}

impl World {
    fn new(hosts: &[u32]) -> Self {
        let net = Net::new(hosts, 0.0, 11);
        let now = net.now;
        let mut agents = BTreeMap::new();
        for &h in hosts {
            let host = HostId(h);
            let mut protocol =
                HostProtocol::new(HostSettings::new(host, UNITS.to_vec()), now).unwrap();
            let app = AppId {
                vip: SocketAddr::from(([203, 0, 113, 10], 443)),
                protocol: Protocol::Tcp,
                endpoint: SocketAddr::from(([10, 0, 0, u8::try_from(h).unwrap()], 8443)),
                info: String::new(),
            };
            protocol
                .set_app(now, app, AppStatus::new(Health::Healthy, 10, 50).unwrap())
                .unwrap();
            let interval = protocol.settings().heartbeat_interval;
            let relay = HeartbeatRelay::new(RelaySettings::new(host, interval));
            agents.insert(host, Agent { protocol, relay });
        }
        let units = UNITS
            .iter()
            .map(|&u| ConsolidatedCache::new(CacheSettings::new(u), now).unwrap())
            .collect();
        Self {
            net,
            agents,
            units,
            seen: Vec::new(),
            t0: now,
        }
    }

    fn at(&self) -> Duration {
        self.net.now - self.t0
    }

    fn kill(&mut self, host: u32) {
        self.net.kill(host);
        self.agents.remove(&HostId(host));
    }

    fn step(&mut self) {
        self.net.step();
        let now = self.net.now;
        for agent in self.agents.values_mut() {
            if agent.protocol.poll_timeout().is_some_and(|t| t <= now) {
                agent.protocol.handle_timeout(now);
            }
        }
        for unit in &mut self.units {
            if unit.poll_timeout().is_some_and(|t| t <= now) {
                unit.handle_timeout(now);
            }
        }
        // Deliver health traffic (instantly, losslessly) until quiet.
        loop {
            let mut quiet = true;
            let hosts: Vec<HostId> = self.agents.keys().copied().collect();
            for host in hosts {
                let view = self.net.groups[&host].view();
                while let Some(agent) = self.agents.get_mut(&host) {
                    let Some(t) = agent.protocol.poll_transmit() else {
                        break;
                    };
                    quiet = false;
                    let Some(out) = agent.relay.route(now, &view, t) else {
                        continue;
                    };
                    match out.to {
                        RelayTo::Unit(u) => self.deliver_to_unit(u, host, &out.message),
                        RelayTo::Host(leader) => {
                            let Message::Heartbeat(hb) = out.message else {
                                panic!("only heartbeats go to a leader: {out:?}");
                            };
                            // A dead leader's agent receives nothing.
                            if let (Some(agent), Some(group)) =
                                (self.agents.get_mut(&leader), self.net.groups.get(&leader))
                            {
                                agent
                                    .relay
                                    .handle_member_heartbeat(
                                        now,
                                        &group.view(),
                                        SenderId::from(host),
                                        hb,
                                    )
                                    .unwrap();
                            }
                        }
                    }
                }
            }
            for unit in &mut self.units {
                let id = unit.unit();
                while let Some(t) = unit.poll_transmit() {
                    quiet = false;
                    if let Some(agent) = self.agents.get_mut(&HostId(t.to.0)) {
                        let _ = agent.protocol.handle(now, id, &t.message);
                    }
                }
            }
            if quiet {
                break;
            }
        }
    }

    fn deliver_to_unit(&mut self, unit: UnitId, from: HostId, message: &Message) {
        let at = self.at();
        let seen = match message {
            Message::ConsolidatedHeartbeat(c) => Some(Seen::Consolidated {
                leader: c.leader,
                hosts: c.heartbeats.iter().map(|h| h.host.0).collect(),
            }),
            Message::Heartbeat(hb) => Some(Seen::Heartbeat(hb.host)),
            _ => None,
        };
        if let Some(seen) = seen {
            self.seen.push((at, unit, seen));
        }
        let now = self.net.now;
        let cache = self.units.iter_mut().find(|c| c.unit() == unit).unwrap();
        // Ignored messages (e.g. a stale heartbeat) are not errors here.
        let _ = cache.handle(now, SenderId::from(from), message);
    }

    fn alive(&self, host: u32) -> bool {
        let now = self.net.now;
        self.units.iter().all(|u| u.is_alive(HostId(host), now))
    }

    fn dead(&self, host: u32) -> bool {
        let now = self.net.now;
        self.units.iter().all(|u| !u.is_alive(HostId(host), now))
    }

    /// Runs until `until` (since the start), checking `each` every tick.
    fn run_to(&mut self, until: Duration, mut each: impl FnMut(&Self)) {
        while self.at() < until {
            self.step();
            each(self);
        }
    }

    /// What `unit` received in `[from, to)`.
    fn seen_between(&self, unit: UnitId, from: Duration, to: Duration) -> Vec<Seen> {
        self.seen
            .iter()
            .filter(|(at, u, _)| *u == unit && *at >= from && *at < to)
            .map(|(_, _, s)| s.clone())
            .collect()
    }
}

#[test]
fn units_keep_the_group_alive_across_a_leader_failure() {
    let mut w = World::new(&[1, 2, 3]);

    // The group forms and the caches fill.
    w.run_to(3 * SECOND, |_| {});
    for h in [1, 2, 3] {
        assert!(w.alive(h), "host {h} not alive after start");
    }

    // Steady state: every host alive at both units, each unit gets exactly
    // one consolidated heartbeat per interval from leader 1 with every
    // member, and no plain heartbeats.
    w.run_to(10 * SECOND, |w| {
        for h in [1, 2, 3] {
            assert!(w.alive(h), "host {h} not alive at {:?}", w.at());
        }
    });
    for unit in UNITS {
        let seen = w.seen_between(unit, 4 * SECOND, 9 * SECOND);
        let want = Seen::Consolidated {
            leader: HostId(1),
            hosts: vec![1, 2, 3],
        };
        assert_eq!(seen, vec![want; 5], "{unit}");
    }
    for unit in &w.units {
        for h in [1, 2, 3] {
            assert!(
                unit.host(HostId(h)).unwrap().in_sync,
                "host {h} at {}",
                unit.unit()
            );
        }
    }

    // The leader dies without a goodbye. Members stay alive throughout;
    // the dead leader ages out (host_dead_after 5 s after its last
    // heartbeat).
    w.kill(1);
    let killed = w.at();
    w.run_to(killed + 15 * SECOND, |w| {
        for h in [2, 3] {
            assert!(w.alive(h), "host {h} not alive at {:?}", w.at());
        }
        if w.at() >= killed + 6 * SECOND + Duration::from_millis(100) {
            assert!(w.dead(1), "dead leader still alive at {:?}", w.at());
        }
    });
    assert!(w.units.iter().all(|u| u.counters().ignored < 10));

    // Host 2 leads now: one consolidation per interval with hosts 2 and 3.
    for unit in UNITS {
        let seen = w.seen_between(unit, killed + 5 * SECOND, killed + 15 * SECOND);
        let want = Seen::Consolidated {
            leader: HostId(2),
            hosts: vec![2, 3],
        };
        assert_eq!(seen, vec![want; 10], "{unit}");
    }
    for unit in &w.units {
        for h in [2, 3] {
            assert!(unit.host(HostId(h)).unwrap().in_sync);
        }
    }
}

#[test]
fn a_lone_survivor_falls_back_to_direct_heartbeats() {
    let mut w = World::new(&[1, 2]);
    w.run_to(3 * SECOND, |_| {});
    w.kill(1);
    let killed = w.at();
    w.run_to(killed + 10 * SECOND, |w| {
        assert!(w.alive(2), "host 2 not alive at {:?}", w.at());
    });
    assert!(w.dead(1));
    // Alone, host 2 heartbeats every unit directly.
    for unit in UNITS {
        let seen = w.seen_between(unit, killed + 4 * SECOND, killed + 9 * SECOND);
        assert_eq!(seen, vec![Seen::Heartbeat(HostId(2)); 5], "{unit}");
    }
}

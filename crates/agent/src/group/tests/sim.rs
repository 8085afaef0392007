//! A simulated network for [`HostGroup`]s: simulated time in fixed ticks,
//! per-datagram latency and loss from a seeded RNG, and hosts that can be
//! killed (their traffic is dropped) and restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_wire::health::GroupGossip;
use switchyard_wire::{HostId, SenderId};

use crate::group::{GroupPeer, GroupSettings, HostGroup};

/// Simulation step.
pub const TICK: Duration = Duration::from_millis(2);

pub fn peer(host: u32) -> GroupPeer {
    let ip = [10, 0, 0, u8::try_from(host).unwrap()];
    GroupPeer {
        host: HostId(host),
        gossip: SocketAddr::from((ip, 9172)),
        agent: SocketAddr::from((ip, 9171)),
    }
}

/// Settings of `host` in a group of `hosts`.
pub fn settings(host: u32, hosts: &[u32], generation: u64) -> GroupSettings {
    let peers = hosts.iter().map(|&h| peer(h)).collect();
    GroupSettings::new("web", peer(host), peers, generation)
}

#[derive(Debug)]
struct Datagram {
    at: Instant,
    from: HostId,
    to: SocketAddr,
    gossip: GroupGossip,
}

/// Hosts gossiping over a simulated network.
#[derive(Debug)]
pub struct Net {
    pub now: Instant,
    hosts: Vec<u32>,
    pub groups: BTreeMap<HostId, HostGroup>,
    generations: BTreeMap<HostId, u64>,
    in_flight: Vec<Datagram>,
    rng: StdRng,
    /// Probability that a datagram is lost.
    pub loss: f64,
    pub sent: u64,
    pub lost: u64,
}

impl Net {
    /// Starts every host of `hosts` at once.
    pub fn new(hosts: &[u32], loss: f64, seed: u64) -> Self {
        let mut net = Self {
            now: Instant::now(),
            hosts: hosts.to_vec(),
            groups: BTreeMap::new(),
            generations: BTreeMap::new(),
            in_flight: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            loss,
            sent: 0,
            lost: 0,
        };
        for &h in hosts {
            net.start_host(h);
        }
        net
    }

    /// Starts (or restarts, under the next generation) `host`.
    pub fn start_host(&mut self, host: u32) {
        let generation = self.generations.entry(HostId(host)).or_insert(0);
        *generation += 1;
        let group = HostGroup::new(settings(host, &self.hosts, *generation), self.now).unwrap();
        self.groups.insert(HostId(host), group);
    }

    /// Kills `host` without a word: its datagrams in flight and to come are
    /// lost.
    pub fn kill(&mut self, host: u32) {
        self.groups.remove(&HostId(host));
    }

    /// Advances one tick: deliver due datagrams, run due timers, send.
    pub fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|d| d.at <= now);
        self.in_flight = later;
        for d in due {
            let Some(group) = self
                .groups
                .values_mut()
                .find(|g| g.settings().me.gossip == d.to)
            else {
                continue;
            };
            // Refusals are part of the protocol (e.g. gossip from a member
            // this host declared down); the tests check the outcome.
            let _ = group.handle_gossip(now, SenderId::from(d.from), &d.gossip);
        }
        for group in self.groups.values_mut() {
            if group.poll_timeout().is_some_and(|t| t <= now) {
                group.handle_timeout(now);
            }
        }
        self.flush();
    }

    /// Moves every host's outgoing gossip into the network.
    pub fn flush(&mut self) {
        let now = self.now;
        for (host, group) in &mut self.groups {
            while let Some((to, gossip)) = group.poll_gossip() {
                self.sent += 1;
                if self.rng.random_bool(self.loss) {
                    self.lost += 1;
                    continue;
                }
                let latency = Duration::from_micros(self.rng.random_range(200..3_000));
                self.in_flight.push(Datagram {
                    at: now + latency,
                    from: *host,
                    to,
                    gossip,
                });
            }
        }
    }

    /// Runs for `d`.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `done` holds or `limit` passes; returns how long it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start <= limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.step();
        }
        None
    }

    /// Whether every running host sees exactly `members` and their lowest
    /// id as the leader.
    pub fn agree(&self, members: &[u32]) -> bool {
        let want: BTreeSet<HostId> = members.iter().map(|&h| HostId(h)).collect();
        let leader = want.first().copied();
        self.groups
            .values()
            .all(|g| g.members() == want && Some(g.leader()) == leader)
    }
}

//! A deterministic simulator: N hosts ([`HostProtocol`]) and M units
//! ([`ConsolidatedCache`]) exchanging messages over a simulated network with
//! configurable loss, duplication, delay (and therefore reordering) and
//! partitions, driven by a simulated clock that jumps to the next event.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_health::{CacheSettings, ConsolidatedCache, HostProtocol, HostSettings};
use switchyard_wire::health::{AppStatus, Health};
use switchyard_wire::{AppId, Codec, HostId, MacKey, Message, Protocol, SenderId, UnitId};

pub const MS: Duration = Duration::from_millis(1);
pub const SEC: Duration = Duration::from_secs(1);

/// Unit ids start here; host ids are 1..=N (one sender id space).
const UNIT_BASE: u32 = 101;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetConfig {
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl NetConfig {
    pub fn perfect() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: MS,
            max_delay: 5 * MS,
        }
    }

    pub fn lossy(loss: f64, duplicate: f64, max_delay: Duration) -> Self {
        Self {
            loss,
            duplicate,
            min_delay: MS,
            max_delay,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Host(usize),
    Unit(usize),
}

#[derive(Debug)]
struct Packet {
    at: Instant,
    seq: u64,
    from: Node,
    to: Node,
    message: Message,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Packet {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Sim {
    pub now: Instant,
    pub net: NetConfig,
    pub hosts: Vec<HostProtocol>,
    pub units: Vec<ConsolidatedCache>,
    rng: StdRng,
    in_flight: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    cut: BTreeSet<Node>,
    crashed: BTreeSet<Node>,
    /// Last generation each unit held for each host, to check that cached
    /// generations never go backwards while a host stays cached.
    seen_generations: BTreeMap<(usize, HostId), u64>,
    pub sent: u64,
    pub dropped: u64,
    /// When set, every message sent is sealed with this codec first and
    /// must fit its payload limit.
    seal: Option<Codec>,
    /// Largest payload sealed, in bytes.
    pub largest_payload: usize,
    /// Check every cache's index every this many events (1: after every
    /// event; large tables make the check costly).
    pub index_check_every: u64,
    steps: u64,
}

pub fn host_id(i: usize) -> HostId {
    HostId(i as u32 + 1)
}

pub fn unit_id(j: usize) -> UnitId {
    UnitId(UNIT_BASE + j as u32)
}

pub fn host_settings(i: usize, units: usize) -> HostSettings {
    let mut s = HostSettings::new(host_id(i), (0..units).map(unit_id).collect());
    s.name = Some(format!("host{i}.example"));
    s.address = Some(SocketAddr::from(([192, 168, 0, i as u8 + 1], 7000)));
    s.initial_generation = 1_000 * (i as u64 + 1);
    s
}

pub fn vip(service: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], service))
}

/// Application `k` of host `i` (service port 80 + k % 2).
pub fn app(i: usize, k: usize) -> AppId {
    AppId {
        vip: vip(80 + (k % 2) as u16),
        protocol: Protocol::Tcp,
        endpoint: SocketAddr::from(([192, 168, 0, i as u8 + 1], 8000 + k as u16)),
        info: String::new(),
    }
}

pub fn status(health: Health, load: u8, capacity: u8) -> AppStatus {
    AppStatus::new(health, load, capacity).expect("valid status")
}

impl Sim {
    pub fn new(hosts: usize, units: usize, seed: u64) -> Self {
        Self::with(hosts, units, seed, |_| {}, |_| {})
    }

    pub fn with(
        hosts: usize,
        units: usize,
        seed: u64,
        host_tweak: impl Fn(&mut HostSettings),
        unit_tweak: impl Fn(&mut CacheSettings),
    ) -> Self {
        let start = Instant::now();
        let hosts = (0..hosts)
            .map(|i| {
                let mut s = host_settings(i, units);
                host_tweak(&mut s);
                HostProtocol::new(s, start).expect("valid host settings")
            })
            .collect();
        let units = (0..units)
            .map(|j| {
                let mut s = CacheSettings::new(unit_id(j));
                unit_tweak(&mut s);
                ConsolidatedCache::new(s, start).expect("valid cache settings")
            })
            .collect();
        Self {
            now: start,
            net: NetConfig::perfect(),
            hosts,
            units,
            rng: StdRng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            crashed: BTreeSet::new(),
            seen_generations: BTreeMap::new(),
            sent: 0,
            dropped: 0,
            seal: None,
            largest_payload: 0,
            index_check_every: 1,
            steps: 0,
        }
    }

    /// From now on, seals every message sent with a real codec limited to
    /// `max_payload` bytes, failing the test if one does not fit.
    pub fn seal_within(&mut self, max_payload: usize) {
        let key = MacKey::derive(b"switchyard-sim-secret-for-tests-only", "sim").expect("test key");
        self.seal = Some(Codec::new(key).with_max_payload(max_payload));
    }

    /// Cuts a node off the network (both directions).
    pub fn cut(&mut self, node: Node) {
        self.cut.insert(node);
    }

    pub fn heal(&mut self, node: Node) {
        self.cut.remove(&node);
    }

    /// Stops a host dead: no timers, no messages, nothing delivered.
    pub fn crash_host(&mut self, i: usize) {
        self.crashed.insert(Node::Host(i));
    }

    /// Replaces a host with a fresh process (empty table, new generation).
    pub fn restart_host(&mut self, i: usize, settings: HostSettings) {
        self.crashed.remove(&Node::Host(i));
        self.hosts[i] = HostProtocol::new(settings, self.now).expect("valid host settings");
    }

    /// Replaces a unit with an empty cache.
    pub fn restart_unit(&mut self, j: usize) {
        let settings = self.units[j].settings().clone();
        self.units[j] = ConsolidatedCache::new(settings, self.now).expect("valid settings");
        self.seen_generations.retain(|(u, _), _| *u != j);
    }

    fn node_of(sender: SenderId) -> Node {
        if sender.0 >= UNIT_BASE {
            Node::Unit((sender.0 - UNIT_BASE) as usize)
        } else {
            Node::Host(sender.0 as usize - 1)
        }
    }

    fn sender_of(node: Node) -> SenderId {
        match node {
            Node::Host(i) => SenderId::from(host_id(i)),
            Node::Unit(j) => SenderId::from(unit_id(j)),
        }
    }

    fn emit(&mut self, from: Node, to: Node, message: Message) {
        self.sent += 1;
        if let Some(codec) = &self.seal {
            let frame = codec
                .seal(Self::sender_of(from), self.sent, &message)
                .unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e}"));
            let payload = frame.len() - switchyard_wire::frame::FRAME_OVERHEAD;
            self.largest_payload = self.largest_payload.max(payload);
        }
        if self.cut.contains(&from) || self.cut.contains(&to) || self.crashed.contains(&to) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.rng.random_bool(self.net.loss) {
                self.dropped += 1;
                continue;
            }
            let span = (self.net.max_delay - self.net.min_delay).as_micros() as u64;
            let delay = self.net.min_delay + Duration::from_micros(self.rng.random_range(0..=span));
            self.seq += 1;
            self.in_flight.push(Reverse(Packet {
                at: self.now + delay,
                seq: self.seq,
                from,
                to,
                message: message.clone(),
            }));
        }
    }

    /// Moves every queued transmit onto the network.
    fn collect(&mut self) {
        for i in 0..self.hosts.len() {
            if self.crashed.contains(&Node::Host(i)) {
                continue;
            }
            while let Some(t) = self.hosts[i].poll_transmit() {
                let to = Self::node_of(SenderId::from(t.to));
                self.emit(Node::Host(i), to, t.message);
            }
        }
        for j in 0..self.units.len() {
            while let Some(t) = self.units[j].poll_transmit() {
                let to = Self::node_of(t.to);
                self.emit(Node::Unit(j), to, t.message);
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let packets = self.in_flight.peek().map(|p| p.0.at);
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.crashed.contains(&Node::Host(*i)))
            .filter_map(|(_, h)| h.poll_timeout());
        let units = self.units.iter().filter_map(|u| u.poll_timeout());
        packets.into_iter().chain(hosts).chain(units).min()
    }

    /// Processes the next event if it is due by `limit`; returns false if
    /// nothing is due.
    fn step(&mut self, limit: Instant) -> bool {
        self.collect();
        let Some(next) = self.next_event() else {
            return false;
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        while self.in_flight.peek().is_some_and(|p| p.0.at <= now) {
            let Some(Reverse(p)) = self.in_flight.pop() else {
                break;
            };
            self.deliver(p);
        }
        for i in 0..self.hosts.len() {
            if !self.crashed.contains(&Node::Host(i))
                && self.hosts[i].poll_timeout().is_some_and(|t| t <= now)
            {
                self.hosts[i].handle_timeout(now);
            }
        }
        for j in 0..self.units.len() {
            if self.units[j].poll_timeout().is_some_and(|t| t <= now) {
                self.units[j].handle_timeout(now);
            }
        }
        self.check_monotonic();
        true
    }

    fn deliver(&mut self, p: Packet) {
        if self.cut.contains(&p.to) || self.cut.contains(&p.from) {
            self.dropped += 1;
            return;
        }
        let from = Self::sender_of(p.from);
        match p.to {
            Node::Host(i) => {
                if self.crashed.contains(&p.to) {
                    return;
                }
                let Node::Unit(j) = p.from else { return };
                let _ = self.hosts[i].handle(self.now, unit_id(j), &p.message);
            }
            Node::Unit(j) => {
                let _ = self.units[j].handle(self.now, from, &p.message);
            }
        }
    }

    fn check_monotonic(&mut self) {
        self.steps += 1;
        let check_index = self.steps.is_multiple_of(self.index_check_every.max(1));
        for (j, unit) in self.units.iter().enumerate() {
            let present: BTreeSet<HostId> = unit.hosts().map(|h| h.host).collect();
            self.seen_generations
                .retain(|(u, h), _| *u != j || present.contains(h));
            for h in unit.hosts() {
                let last = self.seen_generations.entry((j, h.host)).or_insert(0);
                // A host whose generation went backwards for a whole dead
                // interval is reset to 0 on purpose; nothing else may lower it.
                assert!(
                    h.generation >= *last || h.generation == 0,
                    "unit {j}: cached generation of {} went back from {} to {}",
                    h.host,
                    last,
                    h.generation
                );
                *last = h.generation;
            }
            assert!(
                !check_index || unit.index_is_consistent(),
                "unit {j}: index out of step"
            );
        }
    }

    /// Runs until `d` of simulated time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        let mut steps = 0u64;
        while self.step(limit) {
            steps += 1;
            assert!(steps < 5_000_000, "simulation does not make progress");
        }
        self.now = limit;
        self.collect();
    }

    /// Runs until `done` holds (checked after every event); returns the
    /// simulated time it took, or `None` after `max`.
    pub fn run_until(
        &mut self,
        max: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let t0 = self.now;
        let limit = self.now + max;
        let mut steps = 0u64;
        loop {
            if done(self) {
                return Some(self.now - t0);
            }
            if !self.step(limit) {
                self.now = limit;
                return done(self).then(|| self.now - t0);
            }
            steps += 1;
            assert!(steps < 5_000_000, "simulation does not make progress");
        }
    }

    /// Every live host's published table is in every unit's cache (same
    /// generation, rows and digest), and every index is consistent.
    pub fn converged(&self) -> bool {
        self.mismatch().is_none()
    }

    pub fn mismatch(&self) -> Option<String> {
        for (i, host) in self.hosts.iter().enumerate() {
            if host.is_closed() || self.crashed.contains(&Node::Host(i)) {
                continue;
            }
            let published = host.published();
            for (j, unit) in self.units.iter().enumerate() {
                let Some(cached) = unit.host(host.host()) else {
                    return Some(format!("unit {j} does not know {}", host.host()));
                };
                if cached.generation != published.generation()
                    || !cached.table.same_rows(published)
                    || cached.table.digest() != published.digest()
                {
                    return Some(format!(
                        "unit {j} holds {} at generation {} ({} rows), host at {} ({} rows)",
                        host.host(),
                        cached.generation,
                        cached.table.len(),
                        published.generation(),
                        published.len()
                    ));
                }
            }
        }
        None
    }

    /// Converged, and every host published everything and finished every
    /// handshake.
    pub fn settled(&self) -> bool {
        self.converged()
            && self.hosts.iter().enumerate().all(|(i, h)| {
                self.crashed.contains(&Node::Host(i))
                    || h.is_closed()
                    || (!h.has_unpublished_changes() && h.handshakes().is_empty())
            })
    }
}

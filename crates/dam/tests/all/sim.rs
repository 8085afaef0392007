//! A deterministic simulator: N units ([`Dam`]) exchanging DAM messages
//! over a simulated network with configurable loss, duplication, delay (and
//! therefore reordering) and partitions, driven by a simulated clock that
//! jumps to the next event. Membership is set by the test, standing in for
//! SWIM: a killed unit stops at once, and the survivors are told when the
//! test says so.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_dam::{Dam, DamEvent, DamSettings, Holding, QueryId, QueryResult};
use switchyard_wire::dam::Atom;
use switchyard_wire::{Message, UnitId};

pub const MS: Duration = Duration::from_millis(1);
pub const SEC: Duration = Duration::from_secs(1);

/// Unix time of the simulation start.
pub const UNIX0: u64 = 1_700_000_000_000;

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
            max_delay: 2 * MS,
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

#[derive(Debug)]
struct Packet {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
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

pub fn unit_id(j: usize) -> UnitId {
    UnitId(j as u32 + 1)
}

fn index_of(id: UnitId) -> usize {
    id.0 as usize - 1
}

pub fn key(i: usize) -> Vec<u8> {
    format!("session-{i}").into_bytes()
}

pub fn host(h: usize) -> Vec<u8> {
    format!("192.0.2.{h}:443").into_bytes()
}

pub struct Sim {
    start: Instant,
    pub now: Instant,
    pub net: NetConfig,
    pub units: Vec<Dam>,
    /// Events each unit emitted, in order.
    pub events: Vec<Vec<DamEvent>>,
    settings: DamSettings,
    rng: StdRng,
    in_flight: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    /// Pairs of units that cannot reach each other.
    cut: BTreeSet<(usize, usize)>,
    crashed: BTreeSet<usize>,
    pub sent: u64,
    pub dropped: u64,
}

impl Sim {
    /// `n` units that all see each other as live.
    pub fn new(n: usize, seed: u64, settings: DamSettings) -> Self {
        let start = Instant::now();
        let units = (0..n)
            .map(|j| Dam::new(unit_id(j), settings.clone(), start, UNIX0).expect("valid settings"))
            .collect();
        let mut sim = Self {
            start,
            now: start,
            net: NetConfig::perfect(),
            units,
            events: vec![Vec::new(); n],
            settings,
            rng: StdRng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            crashed: BTreeSet::new(),
            sent: 0,
            dropped: 0,
        };
        let all: Vec<usize> = (0..n).collect();
        sim.set_views(&all, &all);
        sim
    }

    /// Live (not crashed) units.
    pub fn live(&self) -> Vec<usize> {
        (0..self.units.len())
            .filter(|j| !self.crashed.contains(j))
            .collect()
    }

    /// Tells each unit of `who` that exactly `members` are live.
    pub fn set_views(&mut self, who: &[usize], members: &[usize]) {
        let ids: Vec<UnitId> = members.iter().map(|&j| unit_id(j)).collect();
        for &j in who {
            self.units[j].set_members(self.now, &ids);
        }
    }

    /// Stops unit `j` dead and tells the survivors (SWIM's verdict).
    pub fn kill(&mut self, j: usize) {
        self.crashed.insert(j);
        let live = self.live();
        self.set_views(&live, &live);
    }

    /// Adds a fresh unit and tells everyone; returns its index.
    pub fn join(&mut self) -> usize {
        let j = self.units.len();
        let dam = Dam::new(unit_id(j), self.settings.clone(), self.now, self.unix_now())
            .expect("valid settings");
        self.units.push(dam);
        self.events.push(Vec::new());
        let live = self.live();
        self.set_views(&live, &live);
        j
    }

    /// Replaces unit `j` with an empty one of the same id (a restart); the
    /// others saw it leave and come back.
    pub fn restart(&mut self, j: usize) {
        self.crashed.insert(j);
        let without = self.live();
        self.set_views(&without, &without);
        self.crashed.remove(&j);
        self.units[j] = Dam::new(unit_id(j), self.settings.clone(), self.now, self.unix_now())
            .expect("valid settings");
        let live = self.live();
        self.set_views(&live, &live);
    }

    /// The simulated wall clock (every unit's clock agrees).
    pub fn unix_now(&self) -> u64 {
        UNIX0 + (self.now - self.start).as_millis() as u64
    }

    /// Cuts every link between different groups, and gives each group the
    /// view of itself alone (SWIM on each side declares the other dead).
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for (a, ga) in groups.iter().enumerate() {
            for gb in &groups[a + 1..] {
                for &x in *ga {
                    for &y in *gb {
                        self.cut.insert((x.min(y), x.max(y)));
                    }
                }
            }
            self.set_views(ga, ga);
        }
    }

    /// Cuts unit `j` off without anybody noticing (no membership change).
    pub fn isolate_silently(&mut self, j: usize) {
        for k in 0..self.units.len() {
            if k != j {
                self.cut.insert((j.min(k), j.max(k)));
            }
        }
    }

    /// Restores every link and the full view of the live units.
    pub fn heal(&mut self) {
        self.cut.clear();
        let live = self.live();
        self.set_views(&live, &live);
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn emit(&mut self, from: usize, to: usize, message: Message) {
        self.sent += 1;
        // Every message must survive the real encoding.
        let payload = message.encode_payload().expect("encodable message");
        let decoded = Message::decode_payload(message.kind(), &payload).expect("decodable");
        assert_eq!(decoded, message);
        if self.is_cut(from, to) || self.crashed.contains(&to) {
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

    /// Moves every queued transmit onto the network and every event into
    /// `events`.
    fn collect(&mut self) {
        for j in 0..self.units.len() {
            if self.crashed.contains(&j) {
                continue;
            }
            while let Some(t) = self.units[j].poll_transmit() {
                assert_ne!(t.to, unit_id(j), "unit {j} sent to itself");
                self.emit(j, index_of(t.to), t.message);
            }
            while let Some(e) = self.units[j].poll_event() {
                self.events[j].push(e);
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let packets = self.in_flight.peek().map(|p| p.0.at);
        let timers = self
            .units
            .iter()
            .enumerate()
            .filter(|(j, _)| !self.crashed.contains(j))
            .filter_map(|(_, u)| u.poll_timeout());
        packets.into_iter().chain(timers).min()
    }

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
            if self.crashed.contains(&p.to) || self.is_cut(p.from, p.to) {
                self.dropped += 1;
                continue;
            }
            // Ignored messages are counted by the machine; not an error.
            let _ = self.units[p.to].handle(now, unit_id(p.from), &p.message);
        }
        for j in 0..self.units.len() {
            if !self.crashed.contains(&j) && self.units[j].poll_timeout().is_some_and(|t| t <= now)
            {
                self.units[j].handle_timeout(now);
            }
        }
        for (j, u) in self.units.iter().enumerate() {
            assert!(u.is_consistent(), "unit {j}: indexes out of step");
        }
        self.collect();
        true
    }

    /// Runs until `d` of simulated time has passed.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        let mut steps = 0u64;
        while self.step(limit) {
            steps += 1;
            assert!(steps < 2_000_000, "simulation does not make progress");
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
        self.collect();
        loop {
            if done(self) {
                return Some(self.now - t0);
            }
            if !self.step(limit) {
                self.now = limit;
                return done(self).then(|| self.now - t0);
            }
            steps += 1;
            assert!(steps < 2_000_000, "simulation does not make progress");
        }
    }

    /// Nothing in flight, and every live unit finished re-evaluating and
    /// has no push pending.
    pub fn settled(&self) -> bool {
        self.in_flight.is_empty() && self.live().iter().all(|&j| self.units[j].is_settled())
    }

    /// Runs until settled, failing after `max`.
    pub fn settle(&mut self, max: Duration) -> Duration {
        self.run_until(max, Sim::settled)
            .unwrap_or_else(|| panic!("not settled after {max:?}"))
    }

    pub fn add(&mut self, j: usize, k: &[u8], data: &[u8]) -> Atom {
        let now = self.now;
        let atom = self.units[j]
            .add(now, k.to_vec(), data.to_vec(), None)
            .expect("valid atom");
        self.collect();
        atom
    }

    /// Queries `k` at unit `j` and runs until answered (at most 10 s).
    pub fn query(&mut self, j: usize, k: &[u8]) -> Option<Atom> {
        let now = self.now;
        match self.units[j].query(now, k) {
            QueryResult::Hit { atom, .. } => Some(atom),
            QueryResult::Pending(id) => self.query_answer(j, id),
        }
    }

    /// Runs until unit `j` answers query `id` (at most 10 s); the answer.
    pub fn query_answer(&mut self, j: usize, id: QueryId) -> Option<Atom> {
        let answered = |s: &Sim| {
            s.events[j].iter().find_map(|e| match e {
                DamEvent::QueryAnswered { query, atom, .. } if *query == id => Some(atom.clone()),
                _ => None,
            })
        };
        let done = self.run_until(10 * SEC, |s| answered(s).is_some());
        assert!(done.is_some(), "unit {j}: query {id:?} never answered");
        answered(self).flatten()
    }

    /// Live units holding a durable or handoff copy of `k`.
    pub fn holders(&self, k: &[u8]) -> BTreeSet<usize> {
        self.live()
            .into_iter()
            .filter(|&j| {
                self.units[j]
                    .get(k)
                    .is_some_and(|(_, h)| h != Holding::Cached)
            })
            .collect()
    }

    /// The owners of `k` among the live units (as every live unit sees it
    /// once views agree).
    pub fn owners(&self, k: &[u8]) -> BTreeSet<usize> {
        let live = self.live();
        self.units[live[0]]
            .owners(k)
            .into_iter()
            .map(index_of)
            .collect()
    }

    /// Keys held (owned or handoff) anywhere among the live units.
    pub fn durable_keys(&self) -> BTreeSet<Vec<u8>> {
        let mut keys = BTreeSet::new();
        for j in self.live() {
            for (atom, h) in self.units[j].atoms() {
                if h != Holding::Cached {
                    keys.insert(atom.key.clone());
                }
            }
        }
        keys
    }

    /// Each key's copy at each holder, for agreement checks.
    pub fn copies(&self, k: &[u8]) -> BTreeMap<usize, Atom> {
        self.live()
            .into_iter()
            .filter_map(|j| {
                self.units[j]
                    .get(k)
                    .filter(|(_, h)| *h != Holding::Cached)
                    .map(|(a, _)| (j, a.clone()))
            })
            .collect()
    }
}

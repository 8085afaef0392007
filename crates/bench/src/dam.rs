//! The DAM benchmark of issue 5: three [`Dam`] machines (replication level
//! 1, the other settings at their defaults) joined by an in-process network,
//! driven in real time on one thread.
//!
//! **The network.** Every message a machine emits is sealed into a real
//! `switchyard_wire` frame with the cluster codec (HMAC-SHA256 tag, sequence
//! number of the sending unit), queued in the destination's inbox (a FIFO,
//! never lost or reordered), and opened there by a [`Receiver`] (tag check,
//! replay window, payload decoding) before [`Dam::handle`] sees it. So the
//! figures include the codec, but no sockets, no system calls and no
//! scheduling between processes: this measures the machines and the codec,
//! not a real network (the real-process tests in
//! `crates/switchyard/tests/session_cluster.rs` cover that path).
//!
//! **Phases** (each bounded by [`Options::phase_limit`]):
//!
//! 1. *Adds*: `atoms` atoms, round robin over the units. The first
//!    `latency_samples` one at a time (add, then deliver until quiet: the
//!    unloaded latency), the rest in batches of `batch` adds followed by
//!    delivery until every push was acknowledged (throughput, and the
//!    latency under that load). An add's latency runs from the call to the
//!    moment the adder handles the last owner's acknowledgement (the
//!    driver watches the `ReturnAtom`s it delivers).
//! 2. *Memory*: process RSS before and after the adds, per atom and per
//!    stored copy, next to the machines' own `footprint` estimate.
//! 3. *Queries*: remote queries (keys no copy or cache entry of which is at
//!    the asking unit), first one at a time then in batches; owner hits;
//!    cache hits (the keys the remote queries just cached).
//! 4. *Recovery*: the third unit dies (its inbox is dropped and the others'
//!    membership no longer lists it); time until both survivors are settled
//!    (`replication_lag` 0, re-evaluation done), then a check that every atom
//!    has both survivors as holding owners, and the messages that took.
//!
//! Keys are `SessionId::FourTuple(..).key()` (what a classifier stores for
//! a TCP connection, 16 bytes), data a host id (4 bytes), as the
//! session-store role writes them. Keys are derived from their index, not
//! stored, so the driver's own memory stays out of the RSS figure.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use switchyard_dam::{Dam, DamEvent, DamSettings, Holding, QueryId, QueryResult, footprint};
use switchyard_wire::dam::{Atom, AtomMeta};
use switchyard_wire::frame::MAX_UDP_PAYLOAD;
use switchyard_wire::{
    Codec, FlowTuple, MacKey, Message, MessageKind, Protocol, Receiver, ReplayGuard, SenderId,
    Sequencer, SessionId, UnitId,
};

use crate::stats::Summary;

/// Units in the benchmark cluster.
pub const UNITS: usize = 3;
/// The cluster secret of the throw-away benchmark cluster.
const SECRET: &[u8] = b"switchyard DAM benchmark: not a production secret";
/// Unix time handed to the machines (their clocks only map expiries).
const UNIX0: u64 = 1_700_000_000_000;
/// Initial capacity of a frame buffer: header, a DAM message with a session
/// key and a host id, and the tag fit.
const FRAME_CAPACITY: usize = 192;
/// Longest sleep while waiting for a machine's timer.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Atoms added (round robin over the units).
    pub atoms: usize,
    /// Operations issued before the network is drained, in the batched
    /// parts of the add and query phases.
    pub batch: usize,
    /// Adds and remote queries timed one at a time (unloaded latency).
    pub latency_samples: usize,
    /// Queries of each kind (owner hit, remote, cache hit); remote queries
    /// need keys the asking unit does not hold, at most about a third of
    /// `atoms` (and the cache hits need them to fit the cache).
    pub queries: usize,
    /// Longest time any phase may take before the benchmark fails.
    pub phase_limit: Duration,
    /// The machines' settings.
    pub settings: DamSettings,
}

impl Options {
    /// The figures: 1,000,000 atoms on 3 units.
    pub fn full() -> Self {
        Self {
            atoms: 1_000_000,
            batch: 256,
            latency_samples: 10_000,
            queries: 90_000,
            phase_limit: Duration::from_secs(300),
            settings: DamSettings::default(),
        }
    }

    /// Small counts, for the CI smoke test.
    pub fn quick() -> Self {
        Self {
            atoms: 20_000,
            batch: 64,
            latency_samples: 500,
            queries: 3_000,
            phase_limit: Duration::from_secs(60),
            settings: DamSettings::default(),
        }
    }
}

/// Messages and bytes of a phase, per type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames delivered (or dropped at a dead unit), per message type.
    pub frames: BTreeMap<MessageKind, u64>,
    /// Frame bytes (header, payload and tag), all types.
    pub bytes: u64,
    /// Frames addressed to a dead unit.
    pub dropped: u64,
}

impl Traffic {
    /// Frames of every type.
    pub fn total(&self) -> u64 {
        self.frames.values().sum()
    }

    fn since(&self, before: &Traffic) -> Traffic {
        let frames = self
            .frames
            .iter()
            .map(|(k, n)| (*k, n - before.frames.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Traffic {
            frames,
            bytes: self.bytes - before.bytes,
            dropped: self.dropped - before.dropped,
        }
    }

    fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .frames
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        format!(
            "{} frames ({}), {:.1} MB",
            self.total(),
            kinds.join(", "),
            self.bytes as f64 / 1e6
        )
    }
}

/// Operations timed as a whole and one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct OpFigures {
    /// Operations.
    pub ops: usize,
    /// Operations per second over the whole part (wall time).
    pub per_sec: f64,
    /// Per-operation latency in ns.
    pub latency: Summary,
    /// On-CPU time of the driver thread per operation in ns (everything
    /// runs on that thread, so this is the cost of an operation, machines
    /// and codec, whatever else the machine runs).
    pub cpu_per_op_ns: f64,
}

/// One unit's table after the adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitMemory {
    /// Owned copies.
    pub owned: u64,
    /// Handoff copies (0 once every push was acknowledged).
    pub handoff: u64,
    /// Cache entries.
    pub cached: u64,
    /// The machine's `footprint` estimate of all of them, in bytes.
    pub footprint_bytes: u64,
}

/// Everything the benchmark measured.
#[derive(Debug, Clone)]
pub struct DamReport {
    /// The options it ran with.
    pub options: Options,
    /// Adds one at a time.
    pub add_unloaded: OpFigures,
    /// Adds in batches of `batch` (throughput: until every owner acked).
    pub add_batched: OpFigures,
    /// Every add, from the first call to the last acknowledgement.
    pub add_overall_per_sec: f64,
    /// Messages of the add phase.
    pub add_traffic: Traffic,
    /// Process RSS before the adds, in bytes.
    pub rss_before: u64,
    /// Process RSS after the adds, in bytes.
    pub rss_after: u64,
    /// Each unit's table.
    pub units: Vec<UnitMemory>,
    /// `footprint` of one owner's copy (key, data, two owners).
    pub footprint_owner: usize,
    /// `footprint` of one non-owner's (cache) copy.
    pub footprint_cache: usize,
    /// Queries answered by an owned copy.
    pub query_owner: OpFigures,
    /// Queries answered by a cache entry.
    pub query_cache: OpFigures,
    /// Remote queries one at a time.
    pub query_remote_unloaded: OpFigures,
    /// Remote queries in batches of `batch`.
    pub query_remote_batched: OpFigures,
    /// Messages of the remote queries.
    pub query_traffic: Traffic,
    /// Atoms the dead unit owned (their level dropped to 0 extra copies).
    pub atoms_degraded: usize,
    /// From the membership change until both survivors were settled.
    pub recovery: Duration,
    /// Until every atom was also checked to be held by both survivors
    /// (includes the O(n) check itself).
    pub recovery_checked: Duration,
    /// Atoms not held by both survivors at the end (must be 0).
    pub recovery_missing: usize,
    /// Messages of the recovery.
    pub recovery_traffic: Traffic,
    /// Pushes the survivors sent during the recovery (retries included).
    pub recovery_pushes: u64,
    /// Of which retries (an acknowledgement not handled within
    /// `push_retry`).
    pub recovery_retries: u64,
    /// On-CPU time of the driver thread until settled.
    pub recovery_cpu: Duration,
    /// Whole run.
    pub elapsed: Duration,
}

/// Key of atom `i`: the session key of a TCP connection.
pub fn key(i: usize) -> Vec<u8> {
    let n = u32::try_from(i).unwrap_or(u32::MAX);
    let client = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(0x0a00_0000 | (n / 50_000)),
        10_000 + u16::try_from(n % 50_000).unwrap_or(0),
    ));
    let vip = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 10), 443));
    match FlowTuple::new(Protocol::Tcp, client, vip) {
        Ok(flow) => SessionId::FourTuple(flow).key(),
        Err(_) => format!("session-{i}").into_bytes(),
    }
}

/// Data of atom `i`: a host id, 4 bytes big-endian.
pub fn data(i: usize) -> Vec<u8> {
    (101 + (i % 100) as u32).to_be_bytes().to_vec()
}

fn unit_id(j: usize) -> UnitId {
    UnitId(j as u32 + 1)
}

fn index_of(id: UnitId) -> usize {
    id.0 as usize - 1
}

/// What the driver saw while delivering.
enum Seen<'a> {
    /// `message` is about to be handled by unit `to`.
    Message { to: usize, message: &'a Message },
    /// Unit `unit` emitted `event`.
    Event { unit: usize, event: DamEvent },
}

struct Node {
    dam: Dam,
    sequencer: Sequencer,
    receiver: Receiver,
    inbox: VecDeque<Vec<u8>>,
    alive: bool,
}

/// Three machines and the in-process network between them.
struct Cluster {
    codec: Codec,
    nodes: Vec<Node>,
    traffic: Traffic,
}

impl Cluster {
    fn new(settings: &DamSettings) -> Result<Self> {
        let key = MacKey::derive(SECRET, "dam-bench").context("cluster key")?;
        let codec = Codec::new(key).with_max_payload(MAX_UDP_PAYLOAD);
        let now = Instant::now();
        let ids: Vec<UnitId> = (0..UNITS).map(unit_id).collect();
        let mut nodes = Vec::new();
        for &id in &ids {
            let mut dam = Dam::new(id, settings.clone(), now, UNIX0).context("DAM settings")?;
            dam.set_members(now, &ids);
            nodes.push(Node {
                dam,
                sequencer: Sequencer::new(1),
                receiver: Receiver::new(codec.clone(), ReplayGuard::default()),
                inbox: VecDeque::new(),
                alive: true,
            });
        }
        Ok(Self {
            codec,
            nodes,
            traffic: Traffic::default(),
        })
    }

    fn live_ids(&self) -> Vec<UnitId> {
        (0..UNITS)
            .filter(|&j| self.nodes[j].alive)
            .map(unit_id)
            .collect()
    }

    /// Seals every queued transmit into the destination's inbox; whether
    /// there was any.
    fn flush(&mut self) -> Result<bool> {
        let mut any = false;
        for j in 0..UNITS {
            if !self.nodes[j].alive {
                continue;
            }
            while let Some(t) = self.nodes[j].dam.poll_transmit() {
                any = true;
                let node = &mut self.nodes[j];
                // Sized for a DAM message, as a daemon's reused send buffer
                // would be (growing from empty would cost reallocations).
                let mut frame = Vec::with_capacity(FRAME_CAPACITY);
                self.codec
                    .seal_into(
                        SenderId::from(unit_id(j)),
                        node.sequencer.next_sequence(),
                        &t.message,
                        &mut frame,
                    )
                    .context("sealing a DAM message")?;
                *self.traffic.frames.entry(t.message.kind()).or_default() += 1;
                self.traffic.bytes += frame.len() as u64;
                let to = index_of(t.to);
                ensure!(to < UNITS && to != j, "unit {j} sent to {}", t.to);
                if self.nodes[to].alive {
                    self.nodes[to].inbox.push_back(frame);
                } else {
                    self.traffic.dropped += 1;
                }
            }
        }
        Ok(any)
    }

    /// Opens and handles every frame in every inbox, fires due timers and
    /// passes events on; whether anything happened.
    fn deliver(&mut self, seen: &mut impl FnMut(Seen<'_>)) -> Result<bool> {
        let mut any = false;
        for j in 0..UNITS {
            if !self.nodes[j].alive {
                continue;
            }
            let node = &mut self.nodes[j];
            while let Some(frame) = node.inbox.pop_front() {
                any = true;
                let envelope = node.receiver.accept(&frame).context("opening a frame")?;
                let from = UnitId(envelope.sender.0);
                seen(Seen::Message {
                    to: j,
                    message: &envelope.message,
                });
                // Ignored messages are counted by the machine, as in the daemon.
                let _ = node.dam.handle(Instant::now(), from, &envelope.message);
            }
            let now = Instant::now();
            if node.dam.poll_timeout().is_some_and(|t| t <= now) {
                any = true;
                node.dam.handle_timeout(now);
            }
            while let Some(event) = node.dam.poll_event() {
                seen(Seen::Event { unit: j, event });
            }
        }
        Ok(any)
    }

    /// Delivers until nothing is queued anywhere (timers that are due fire;
    /// future ones are left).
    fn drain(&mut self, seen: &mut impl FnMut(Seen<'_>)) -> Result<()> {
        loop {
            let sent = self.flush()?;
            let handled = self.deliver(seen)?;
            if !sent && !handled {
                return Ok(());
            }
        }
    }

    /// Drains, sleeping until the machines' next deadline, until `done`
    /// holds; fails after `limit`.
    fn run_until(
        &mut self,
        limit: Duration,
        seen: &mut impl FnMut(Seen<'_>),
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.drain(seen)?;
            if done(self) {
                return Ok(());
            }
            let now = Instant::now();
            ensure!(now < deadline, "not done within {limit:?}");
            let next = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .filter_map(|n| n.dam.poll_timeout())
                .min()
                .unwrap_or(now + MAX_SLEEP);
            let wait = next.saturating_duration_since(now).min(MAX_SLEEP);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    fn settled(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| !n.alive || (n.dam.is_settled() && n.inbox.is_empty()))
    }

    fn owners(&self, key: &[u8]) -> Vec<usize> {
        self.nodes[0]
            .dam
            .owners(key)
            .into_iter()
            .map(index_of)
            .collect()
    }
}

/// The resident set size of this process.
fn rss_bytes() -> Result<u64> {
    crate::procfs::rss_bytes(std::process::id()).context("no VmRSS in /proc/self/status")
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// On-CPU time of the calling thread so far, in ns (the scheduler's
/// accounting, `/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("/proc/thread-self/schedstat")?;
    stat.split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()
        .context("schedstat run time")
}

/// Wall time and on-CPU time of a part.
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu_ns: u64,
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Timed)> {
    let (cpu0, t0) = (thread_cpu_ns()?, Instant::now());
    let value = f()?;
    let wall = t0.elapsed();
    let cpu_ns = thread_cpu_ns()?.saturating_sub(cpu0);
    Ok((value, Timed { wall, cpu_ns }))
}

fn figures(ops: usize, t: Timed, samples: &[i64]) -> Result<OpFigures> {
    Ok(OpFigures {
        ops,
        per_sec: ops as f64 / t.wall.as_secs_f64().max(1e-9),
        latency: Summary::of(samples).context("no latency samples")?,
        cpu_per_op_ns: t.cpu_ns as f64 / ops.max(1) as f64,
    })
}

/// An add waiting for its owners' acknowledgements.
struct PendingAdd {
    adder: usize,
    waiting: usize,
    start: Instant,
}

/// Adds atoms `range`, `batch` at a time, each batch delivered until every
/// push was acknowledged. Latencies go to `samples`.
fn run_adds(
    cluster: &mut Cluster,
    range: std::ops::Range<usize>,
    batch: usize,
    limit: Duration,
    samples: &mut Vec<i64>,
) -> Result<Duration> {
    let start = Instant::now();
    let mut pending: HashMap<Vec<u8>, PendingAdd> = HashMap::with_capacity(batch);
    let mut i = range.start;
    while i < range.end {
        let end = (i + batch).min(range.end);
        for n in i..end {
            let adder = n % UNITS;
            let k = key(n);
            let waiting = cluster.owners(&k).iter().filter(|&&o| o != adder).count();
            let t0 = Instant::now();
            cluster.nodes[adder]
                .dam
                .add(t0, k.clone(), data(n), None)
                .context("add")?;
            pending.insert(
                k,
                PendingAdd {
                    adder,
                    waiting,
                    start: t0,
                },
            );
        }
        let mut seen = |s: Seen<'_>| {
            if let Seen::Message {
                to,
                message: Message::ReturnAtom(r),
                ..
            } = s
                && let Some(p) = pending.get_mut(&r.key)
                && p.adder == to
            {
                p.waiting = p.waiting.saturating_sub(1);
                if p.waiting == 0 {
                    samples.push(nanos(p.start.elapsed()));
                    pending.remove(&r.key);
                }
            }
        };
        cluster.run_until(limit, &mut seen, |c| c.settled())?;
        ensure!(
            pending.is_empty(),
            "{} adds never acknowledged by every owner",
            pending.len()
        );
        ensure!(start.elapsed() < limit, "adds took longer than {limit:?}");
        i = end;
    }
    Ok(start.elapsed())
}

/// Remote queries for `keys` at `unit`, `batch` at a time. Latencies go to
/// `samples`; returns the elapsed time.
fn run_remote_queries(
    cluster: &mut Cluster,
    work: &[(usize, usize)],
    batch: usize,
    limit: Duration,
    samples: &mut Vec<i64>,
) -> Result<Duration> {
    let start = Instant::now();
    let mut pending: HashMap<(usize, QueryId), (usize, Instant)> = HashMap::with_capacity(batch);
    let mut wrong = 0usize;
    for chunk in work.chunks(batch.max(1)) {
        let answered = Cell::new(0usize);
        for &(unit, i) in chunk {
            let t0 = Instant::now();
            match cluster.nodes[unit].dam.query(t0, &key(i)) {
                QueryResult::Pending(id) => {
                    pending.insert((unit, id), (i, t0));
                }
                QueryResult::Hit { .. } => bail!("unit {unit}: atom {i} answered locally"),
            }
        }
        let mut seen = |s: Seen<'_>| {
            if let Seen::Event {
                unit,
                event: DamEvent::QueryAnswered { query, atom, .. },
            } = s
                && let Some((i, t0)) = pending.remove(&(unit, query))
            {
                samples.push(nanos(t0.elapsed()));
                answered.set(answered.get() + 1);
                if atom.is_none_or(|a| a.data != data(i)) {
                    wrong += 1;
                }
            }
        };
        cluster.run_until(limit, &mut seen, |c| {
            answered.get() == chunk.len() && c.settled()
        })?;
        ensure!(
            pending.is_empty(),
            "{} remote queries unanswered",
            pending.len()
        );
        ensure!(
            start.elapsed() < limit,
            "queries took longer than {limit:?}"
        );
    }
    ensure!(wrong == 0, "{wrong} remote queries answered wrongly");
    Ok(start.elapsed())
}

/// Local queries (`holding` expected) timed one by one, then the same keys
/// again timed as a whole for the throughput.
fn run_local_queries(
    cluster: &mut Cluster,
    work: &[(usize, usize)],
    holding: Holding,
) -> Result<OpFigures> {
    ensure!(!work.is_empty(), "no keys for {holding:?} queries");
    let keys: Vec<(usize, Vec<u8>)> = work.iter().map(|&(u, i)| (u, key(i))).collect();
    let mut samples = Vec::with_capacity(keys.len());
    for (unit, k) in &keys {
        let t0 = Instant::now();
        let r = cluster.nodes[*unit].dam.query(t0, k);
        samples.push(nanos(t0.elapsed()));
        match r {
            QueryResult::Hit { holding: h, .. } if h == holding => {}
            other => bail!("unit {unit}: expected a {holding:?} hit, got {other:?}"),
        }
    }
    let now = Instant::now();
    let (hits, t) = timed(|| {
        Ok(keys
            .iter()
            .filter(|(unit, k)| {
                matches!(
                    cluster.nodes[*unit].dam.query(now, k),
                    QueryResult::Hit { .. }
                )
            })
            .count())
    })?;
    ensure!(hits == keys.len(), "only {hits} of {} hits", keys.len());
    figures(keys.len(), t, &samples)
}

/// Runs the whole benchmark.
pub fn run(opts: &Options) -> Result<DamReport> {
    ensure!(opts.atoms >= 3 * UNITS, "too few atoms");
    ensure!(opts.batch >= 1, "batch must be at least 1");
    let started = Instant::now();
    let limit = opts.phase_limit;
    let mut cluster = Cluster::new(&opts.settings)?;

    // Adds. Sample vectors are allocated before the RSS baseline.
    let unloaded_n = opts.latency_samples.min(opts.atoms / 2);
    // Touched now, so their pages are in the baseline, not in the delta.
    let mut add_unloaded = vec![-1; unloaded_n];
    let mut add_batched = vec![-1; opts.atoms - unloaded_n];
    add_unloaded.clear();
    add_batched.clear();
    let rss_before = rss_bytes()?;
    let (_, t_unloaded) =
        timed(|| run_adds(&mut cluster, 0..unloaded_n, 1, limit, &mut add_unloaded))?;
    let (_, t_batched) = timed(|| {
        run_adds(
            &mut cluster,
            unloaded_n..opts.atoms,
            opts.batch,
            limit,
            &mut add_batched,
        )
    })?;
    let rss_after = rss_bytes()?;
    let add_traffic = cluster.traffic.clone();
    let add_overall_per_sec = opts.atoms as f64 / (t_unloaded.wall + t_batched.wall).as_secs_f64();

    let units: Vec<UnitMemory> = cluster
        .nodes
        .iter()
        .map(|n| {
            let c = n.dam.counters();
            UnitMemory {
                owned: c.atoms_owned,
                handoff: c.atoms_handoff,
                cached: c.atoms_cached,
                footprint_bytes: c.memory_bytes,
            }
        })
        .collect();
    let sample = Atom {
        key: key(0),
        data: data(0),
        meta: AtomMeta {
            added_by: unit_id(0),
            version: 0,
            zombie: false,
            expires_at_ms: 0,
        },
    };
    let footprint_owner = footprint(&sample, 2);
    let footprint_cache = footprint(&sample, 0);

    // Keys for the queries: remote ones (nothing held at the asking unit),
    // spread over the units; owner hits at the key's first owner.
    let mut remote_work = Vec::new();
    let mut owner_work = Vec::new();
    for i in 0..opts.atoms {
        if remote_work.len() >= opts.queries && owner_work.len() >= opts.queries {
            break;
        }
        let k = key(i);
        let owners = cluster.owners(&k);
        if owner_work.len() < opts.queries {
            owner_work.push((owners[0], i));
        }
        // Not the adder (i % UNITS), whose cache may still hold the key.
        let unit = (i + 1) % UNITS;
        if remote_work.len() < opts.queries
            && !owners.contains(&unit)
            && cluster.nodes[unit].dam.get(&k).is_none()
        {
            remote_work.push((unit, i));
        }
    }
    ensure!(
        remote_work.len() > 2,
        "no keys held by other units only (more atoms needed)"
    );
    let remote_unloaded_n = opts.latency_samples.min(remote_work.len() / 2);
    let (remote_one, remote_many) = remote_work.split_at(remote_unloaded_n);
    let before = cluster.traffic.clone();
    let mut samples = Vec::with_capacity(remote_one.len());
    let (_, t) = timed(|| run_remote_queries(&mut cluster, remote_one, 1, limit, &mut samples))?;
    let query_remote_unloaded = figures(remote_one.len(), t, &samples)?;
    let mut samples = Vec::with_capacity(remote_many.len());
    let (_, t) =
        timed(|| run_remote_queries(&mut cluster, remote_many, opts.batch, limit, &mut samples))?;
    let query_remote_batched = figures(remote_many.len(), t, &samples)?;
    let query_traffic = cluster.traffic.since(&before);
    let query_owner = run_local_queries(&mut cluster, &owner_work, Holding::Owned)?;
    let query_cache = run_local_queries(&mut cluster, &remote_work, Holding::Cached)?;

    // Recovery: the third unit dies.
    let dead = UNITS - 1;
    let atoms_degraded = (0..opts.atoms)
        .filter(|&i| cluster.owners(&key(i)).contains(&dead))
        .count();
    let pushes = |c: &Cluster| -> (u64, u64) {
        c.nodes.iter().take(dead).fold((0, 0), |(p, r), n| {
            let c = n.dam.counters();
            (p + c.pushes_sent, r + c.push_retries)
        })
    };
    let pushes_before = pushes(&cluster);
    let before = cluster.traffic.clone();
    cluster.nodes[dead].alive = false;
    cluster.nodes[dead].inbox.clear();
    let live = cluster.live_ids();
    let cpu0 = thread_cpu_ns()?;
    let t0 = Instant::now();
    for node in cluster.nodes.iter_mut().take(dead) {
        node.dam.set_members(t0, &live);
    }
    cluster.run_until(limit, &mut |_| {}, |c| c.settled())?;
    let recovery = t0.elapsed();
    let recovery_cpu = Duration::from_nanos(thread_cpu_ns()?.saturating_sub(cpu0));
    let missing = |c: &Cluster| {
        (0..opts.atoms)
            .filter(|&i| {
                let k = key(i);
                !c.nodes.iter().take(dead).all(|n| {
                    n.dam
                        .get(&k)
                        .is_some_and(|(a, h)| h == Holding::Owned && a.data == data(i))
                })
            })
            .count()
    };
    let mut recovery_missing = missing(&cluster);
    while recovery_missing > 0 && t0.elapsed() < limit {
        cluster.run_until(MAX_SLEEP, &mut |_| {}, |_| false).ok();
        recovery_missing = missing(&cluster);
    }
    let recovery_checked = t0.elapsed();
    let recovery_traffic = cluster.traffic.since(&before);
    let pushes_after = pushes(&cluster);

    Ok(DamReport {
        options: opts.clone(),
        add_unloaded: figures(unloaded_n, t_unloaded, &add_unloaded)?,
        add_batched: figures(opts.atoms - unloaded_n, t_batched, &add_batched)?,
        add_overall_per_sec,
        add_traffic,
        rss_before,
        rss_after,
        units,
        footprint_owner,
        footprint_cache,
        query_owner,
        query_cache,
        query_remote_unloaded,
        query_remote_batched,
        query_traffic,
        atoms_degraded,
        recovery,
        recovery_checked,
        recovery_missing,
        recovery_traffic,
        recovery_pushes: pushes_after.0 - pushes_before.0,
        recovery_retries: pushes_after.1 - pushes_before.1,
        recovery_cpu,
        elapsed: started.elapsed(),
    })
}

fn us(ns: i64) -> String {
    format!("{:.2}", ns as f64 / 1e3)
}

impl DamReport {
    /// Copies stored after the adds (owned, handoff and cache entries, all
    /// units).
    pub fn entries(&self) -> u64 {
        self.units
            .iter()
            .map(|u| u.owned + u.handoff + u.cached)
            .sum()
    }

    /// RSS growth over the adds per atom.
    pub fn rss_per_atom(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.options.atoms as f64
    }

    /// RSS growth over the adds per stored entry.
    pub fn rss_per_entry(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.entries().max(1) as f64
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### DAM: {} atoms on {UNITS} units, replication {:?}, batches of {}\n",
            o.atoms, o.settings.replication, o.batch
        );
        let defaults = DamSettings::default();
        if o.settings != defaults {
            let _ = writeln!(
                s,
                "Settings changed from the defaults: pace_pushes {}, pace_scan {} \
                 (defaults {}, {}).\n",
                o.settings.pace_pushes,
                o.settings.pace_scan,
                defaults.pace_pushes,
                defaults.pace_scan
            );
        }
        let _ = writeln!(
            s,
            "In-process network, one thread, every message sealed and opened as a \
             `switchyard_wire` frame (HMAC-SHA256). Latencies in µs.\n"
        );
        let _ = writeln!(
            s,
            "| operation | ops | ops/s | CPU µs/op | p50 µs | p90 µs | p99 µs | max µs |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let rows = [
            (
                "add, one at a time (until every owner acked)",
                &self.add_unloaded,
            ),
            ("add, batched (until every owner acked)", &self.add_batched),
            ("query, owner hit", &self.query_owner),
            ("query, cache hit", &self.query_cache),
            ("query, remote, one at a time", &self.query_remote_unloaded),
            ("query, remote, batched", &self.query_remote_batched),
        ];
        for (name, f) in rows {
            let l = &f.latency;
            let _ = writeln!(
                s,
                "| {name} | {} | {:.0} | {:.2} | {} | {} | {} | {} |",
                f.ops,
                f.per_sec,
                f.cpu_per_op_ns / 1e3,
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.max)
            );
        }
        let _ = writeln!(
            s,
            "\nAll {} adds: {:.0} atoms/s; {}.",
            o.atoms,
            self.add_overall_per_sec,
            self.add_traffic.describe()
        );
        let _ = writeln!(s, "Remote queries: {}.\n", self.query_traffic.describe());

        let _ = writeln!(s, "**Memory after the adds**\n");
        let _ = writeln!(
            s,
            "| unit | owned | handoff | cached | footprint MB | footprint B/entry |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for (j, u) in self.units.iter().enumerate() {
            let entries = (u.owned + u.handoff + u.cached).max(1);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.0} |",
                j + 1,
                u.owned,
                u.handoff,
                u.cached,
                u.footprint_bytes as f64 / 1e6,
                u.footprint_bytes as f64 / entries as f64
            );
        }
        let _ = writeln!(
            s,
            "\nProcess RSS {:.1} MB → {:.1} MB: **{:.0} B per atom** (all copies on all \
             units), {:.0} B per stored entry ({} entries). `footprint`: {} B for an \
             owner's copy, {} B for a non-owner's cache entry.\n",
            self.rss_before as f64 / 1e6,
            self.rss_after as f64 / 1e6,
            self.rss_per_atom(),
            self.rss_per_entry(),
            self.entries(),
            self.footprint_owner,
            self.footprint_cache
        );
        let _ = writeln!(s, "**Recovery after unit {UNITS} dies**\n");
        let _ = writeln!(
            s,
            "{} atoms had a copy on the dead unit. Both survivors settled \
             (replication lag 0) after **{:.3} s** ({:.3} s on the CPU); every atom held by \
             both after {:.3} s (including the check), {} missing. {} pushes ({} retries); \
             {} ({} dropped at the dead unit).\n",
            self.atoms_degraded,
            self.recovery.as_secs_f64(),
            self.recovery_cpu.as_secs_f64(),
            self.recovery_checked.as_secs_f64(),
            self.recovery_missing,
            self.recovery_pushes,
            self.recovery_retries,
            self.recovery_traffic.describe(),
            self.recovery_traffic.dropped
        );
        let _ = writeln!(s, "Whole run: {:.1} s.", self.elapsed.as_secs_f64());
        s
    }
}

//! The **session-store role** (spec FIGS. 20–24, 26–31): this unit's portion of the
//! distributed atom manager ([`switchyard_dam::Dam`]), driven over one authenticated UDP
//! endpoint on `address:[sessions] port` (default 9174) that carries
//!
//! - hosts' session messages (`SessionResync`, `SessionUp`, `SessionDown`,
//!   `SessionKeepalive`), answered with cumulative `SessionAck`s or a
//!   `SessionResyncRequest` (see `switchyard_wire::session` for the channel rules);
//! - DAM calls between session-store units (`AddAtom`, `DeleteAtom`, `QueryAtom`,
//!   `ReturnAtom`);
//! - the units' membership gossip ([`crate::session_members`], foca), whose live set feeds
//!   [`Dam::set_members`].
//!
//! A session up becomes `Dam::add(key = SessionId::key(), data = host id as 4 big-endian
//! bytes, no expiry)`, a session down `Dam::delete(key, zombie time of the session's type)`.
//! For each host whose channel it serves the unit remembers which keys the host reported
//! through it; when a resync completes, keys the host no longer has are deleted (downs lost
//! while the channel was broken).
//!
//! Trust: session messages only from configured hosts (`pools.hosts`) speaking for
//! themselves (the message's host is the frame's sender), DAM calls and gossip only from
//! configured session-store units. Refusals are counted by reason.
//!
//! Other roles (the classifier, the request router) look sessions up through
//! [`SessionStoreHandle::lookup`]: a local copy answers at once, otherwise the machine asks
//! the owners (then every unit) and the answer is cached.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchyard_config::{Config, Role, SessionReplication, SessionSettings, Unit, ZombieTimes};
use switchyard_dam::{
    Dam, DamCounters, DamEvent, DamSettings, Holding, QueryId, QueryResult, Replication,
};
use switchyard_transport::{TransportCounters, TransportSnapshot, UdpEndpoint};
use switchyard_wire::dam::Atom;
use switchyard_wire::session::{SessionAck, SessionResyncRequest};
use switchyard_wire::{Codec, HostId, Message, SenderId, SessionId, UnitId};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::session_members::UnitMembership;

/// How long a lookup waits for the machine's answer at most (it answers within
/// `2 × query_attempts × query_timeout`, 400 ms by default).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the role.
#[derive(Debug, Clone)]
pub struct SessionRoleSettings {
    /// This unit.
    pub unit: UnitId,
    /// Where to listen (`address:[sessions] port`).
    pub bind: SocketAddr,
    /// Every session-store unit's session address (this one included).
    pub units: BTreeMap<UnitId, SocketAddr>,
    /// Unit names, for documents.
    pub unit_names: BTreeMap<UnitId, String>,
    /// Configured hosts.
    pub hosts: BTreeMap<HostId, String>,
    /// The cluster codec.
    pub codec: Codec,
    /// The DAM machine's settings.
    pub dam: DamSettings,
    /// Zombie time per session type.
    pub zombie: ZombieTimes,
}

/// The DAM settings `[sessions]` gives.
pub fn dam_settings(sessions: &SessionSettings) -> DamSettings {
    DamSettings {
        replication: match sessions.replication {
            SessionReplication::Level(n) => Replication::Level(n),
            SessionReplication::Full => Replication::Full,
        },
        cache_capacity: usize::try_from(sessions.cache_size).unwrap_or(usize::MAX),
        cache_ttl: sessions.cache_ttl,
        ..DamSettings::default()
    }
}

impl SessionRoleSettings {
    /// The settings of `unit` in `config`.
    pub fn from_config(config: &Config, unit: &Unit, codec: Codec) -> Self {
        let port = config.sessions.port;
        let stores: Vec<&Unit> = config.units_with_role(Role::SessionStore).collect();
        Self {
            unit: unit.id,
            bind: SocketAddr::new(unit.address, port),
            units: stores
                .iter()
                .map(|u| (u.id, SocketAddr::new(u.address, port)))
                .collect(),
            unit_names: config
                .cluster
                .units
                .iter()
                .map(|u| (u.id, u.name.clone()))
                .collect(),
            hosts: crate::unit::host_names(config),
            codec,
            dam: dam_settings(&config.sessions),
            zombie: config.sessions.zombie,
        }
    }
}

/// Why the role did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRoleError {
    /// The session port cannot be bound.
    #[error("cannot listen for session tracking on {addr} (UDP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The DAM settings are invalid.
    #[error("invalid DAM settings: {0}")]
    Dam(#[from] switchyard_dam::DamError),
}

/// The zombie time of a session's type.
pub fn zombie_for(zombie: &ZombieTimes, session: &SessionId) -> Duration {
    match session {
        SessionId::FourTuple(_) => zombie.four_tuple,
        SessionId::ClientIp(_) => zombie.client_ip,
        SessionId::TlsSessionId(_) => zombie.tls_session_id,
        SessionId::HttpCookie { .. } => zombie.http_cookie,
        SessionId::User(_) => zombie.user,
        SessionId::Custom { .. } => zombie.custom,
    }
}

/// The host an atom's data names (4 big-endian bytes), if it is a session atom.
pub fn host_of(data: &[u8]) -> Option<HostId> {
    <[u8; 4]>::try_from(data)
        .ok()
        .map(|b| HostId(u32::from_be_bytes(b)))
}

/// A session found by [`SessionStoreHandle::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLocation {
    /// The host holding the session.
    pub host: HostId,
    /// Deleted: late packets still go to the host until the zombie expires.
    pub zombie: bool,
    /// How this unit held it when asked: a copy (`Owned`, `Handoff`), a cache entry, or
    /// `None` when other units were asked.
    pub holding: Option<Holding>,
    /// The whole atom (metadata: adder, version, expiry).
    pub atom: Atom,
}

/// What the role did with session messages, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleCounters {
    /// Session ups applied.
    pub ups: u64,
    /// Session downs applied.
    pub downs: u64,
    /// Channels started by hosts (resync markers accepted).
    pub resyncs: u64,
    /// Sessions deleted because a resync did not list them.
    pub resync_deletes: u64,
    /// Resyncs asked of hosts whose channel this unit did not know.
    pub resync_requests: u64,
    /// Duplicate (already processed) session messages, acknowledged again.
    pub duplicates: u64,
    /// Session messages ahead of a gap, dropped (the host resends).
    pub gaps: u64,
    /// Keepalives answered.
    pub keepalives: u64,
    /// Messages refused or ignored, by reason.
    pub ignored: BTreeMap<&'static str, u64>,
    /// DAM calls the machine refused (ill-formed keys or data).
    pub dam_errors: u64,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
}

#[derive(Debug, Clone)]
struct HostChannel {
    channel: u64,
    last_id: u64,
    /// Last id of the channel's resync, while it is being received.
    resync_end: Option<u64>,
    resync_keys: BTreeSet<Vec<u8>>,
    /// Keys this host reported through this unit, with their zombie time.
    keys: BTreeMap<Vec<u8>, Duration>,
    last_seen: Instant,
}

#[derive(Debug)]
struct Shared {
    dam: Dam,
    waiters: HashMap<QueryId, oneshot::Sender<Option<Atom>>>,
    hosts: BTreeMap<HostId, HostChannel>,
    counters: RoleCounters,
}

/// One host's channel as documents show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChannelView {
    /// The host.
    pub host: HostId,
    /// Its channel number.
    pub channel: u64,
    /// The last message id processed.
    pub last_id: u64,
    /// Whether a resync is being received.
    pub resyncing: bool,
    /// Keys reported through this unit.
    pub sessions: u64,
    /// Since the host was last heard from.
    pub last_seen: Duration,
}

/// What `/v1/sessions/summary` shows.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Live session-store units (this one included).
    pub members: Vec<UnitId>,
    /// The replication level.
    pub replication: Replication,
    /// The machine's counters.
    pub dam: DamCounters,
    /// The role's counters.
    pub role: RoleCounters,
    /// Live (non-zombie) atoms held here (owned or handed off) per host.
    pub atoms_per_host: BTreeMap<HostId, u64>,
    /// Hosts whose channels this unit serves.
    pub channels: Vec<HostChannelView>,
    /// The endpoint's counters.
    pub transport: TransportSnapshot,
}

/// The role's API for other roles and the admin API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionStoreHandle {
    unit: UnitId,
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    transport: Arc<TransportCounters>,
    unit_names: Arc<BTreeMap<UnitId, String>>,
    host_names: Arc<BTreeMap<HostId, String>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A poisoned lock means a panic mid-update elsewhere; the machine's own invariants are
    // kept per call, so keep serving.
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SessionStoreHandle {
    /// This unit.
    pub fn unit(&self) -> UnitId {
        self.unit
    }

    /// Where the role listens (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A unit's name.
    pub fn unit_name(&self, unit: UnitId) -> Option<&str> {
        self.unit_names.get(&unit).map(String::as_str)
    }

    /// A host's name.
    pub fn host_name(&self, host: HostId) -> Option<&str> {
        self.host_names.get(&host).map(String::as_str)
    }

    /// The owners of `key` among the live units, primary first.
    pub fn owners(&self, key: &[u8]) -> Vec<UnitId> {
        lock(&self.shared).dam.owners(key)
    }

    /// Looks `key` (a `SessionId::key()`) up: a local copy or live cache entry answers at
    /// once; otherwise the owners (then every unit) are asked and the answer is cached.
    /// `None`: no live unit has it (or the answer did not come within 5 s).
    pub async fn lookup(&self, key: &[u8]) -> Option<SessionLocation> {
        let rx = {
            let mut shared = lock(&self.shared);
            match shared.dam.query(Instant::now(), key) {
                QueryResult::Hit { atom, holding } => {
                    return location(atom, Some(holding));
                }
                QueryResult::Pending(id) => {
                    let (tx, rx) = oneshot::channel();
                    shared.waiters.insert(id, tx);
                    rx
                }
            }
        };
        self.wake.notify_one();
        match tokio::time::timeout(LOOKUP_TIMEOUT, rx).await {
            Ok(Ok(Some(atom))) => location(atom, None),
            _ => None,
        }
    }

    /// Records that the session `key` (a `SessionId::key()`) is on `host`, as an atom this
    /// unit adds (a classifier's or router's new choice, shared with every unit), expiring
    /// after `ttl`. Errors (a key too long) are logged and dropped.
    pub fn record(&self, key: &[u8], host: HostId, ttl: Option<Duration>) {
        // The data is a host id, as hosts' sessions store it (`host_of` reads it).
        self.record_data(key, host.0.to_be_bytes().to_vec(), ttl);
    }

    /// Records an atom `key` → `data` this unit adds (e.g. a route), expiring after `ttl`.
    pub fn record_data(&self, key: &[u8], data: Vec<u8>, ttl: Option<Duration>) {
        let added = {
            let mut shared = lock(&self.shared);
            shared.dam.add(Instant::now(), key.to_vec(), data, ttl)
        };
        match added {
            Ok(_) => self.wake.notify_one(),
            Err(error) => tracing::debug!(%error, "atom not recorded"),
        }
    }

    /// Deletes the atom `key`; it lingers as a zombie for `zombie_for`.
    pub fn forget(&self, key: &[u8], zombie_for: Duration) {
        lock(&self.shared)
            .dam
            .delete(Instant::now(), key, zombie_for);
        self.wake.notify_one();
    }

    /// The atom `key` if this unit holds it now (a copy or a live cache entry), without
    /// waiting. Otherwise the owners are asked in the background and their answer is cached,
    /// so a later call (e.g. for a retransmitted packet) finds it.
    pub fn try_lookup(&self, key: &[u8]) -> Option<Atom> {
        let hit = match lock(&self.shared).dam.query(Instant::now(), key) {
            QueryResult::Hit { atom, .. } => Some(atom),
            QueryResult::Pending(_) => None,
        };
        if hit.is_none() {
            self.wake.notify_one();
        }
        hit
    }

    /// The DAM's counters.
    pub fn counters(&self) -> DamCounters {
        lock(&self.shared).dam.counters()
    }

    /// Membership, counters, atoms per host and channels.
    pub fn summary(&self) -> SessionSummary {
        let now = Instant::now();
        let shared = lock(&self.shared);
        let mut atoms_per_host = BTreeMap::new();
        for (atom, holding) in shared.dam.atoms() {
            if holding == Holding::Cached || atom.meta.zombie {
                continue;
            }
            if let Some(host) = host_of(&atom.data) {
                *atoms_per_host.entry(host).or_insert(0) += 1;
            }
        }
        SessionSummary {
            members: shared.dam.members().to_vec(),
            replication: shared.dam.settings().replication,
            dam: shared.dam.counters(),
            role: shared.counters.clone(),
            atoms_per_host,
            channels: shared
                .hosts
                .iter()
                .map(|(host, c)| HostChannelView {
                    host: *host,
                    channel: c.channel,
                    last_id: c.last_id,
                    resyncing: c.resync_end.is_some(),
                    sessions: c.keys.len() as u64,
                    last_seen: now.saturating_duration_since(c.last_seen),
                })
                .collect(),
            transport: self.transport.snapshot(),
        }
    }
}

fn location(atom: Atom, holding: Option<Holding>) -> Option<SessionLocation> {
    Some(SessionLocation {
        host: host_of(&atom.data)?,
        zombie: atom.meta.zombie,
        holding,
        atom,
    })
}

/// Starts the role: binds the session port and spawns its task.
pub async fn start(
    settings: SessionRoleSettings,
    stop: watch::Receiver<bool>,
) -> Result<(SessionStoreHandle, JoinHandle<()>), SessionRoleError> {
    let endpoint = UdpEndpoint::bind(
        settings.bind,
        settings.codec.clone(),
        SenderId::from(settings.unit),
    )
    .await
    .map_err(|source| SessionRoleError::Bind {
        addr: settings.bind,
        source,
    })?;
    let addr = endpoint
        .local_addr()
        .map_err(|source| SessionRoleError::Bind {
            addr: settings.bind,
            source,
        })?;
    let now = Instant::now();
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let unix_ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
    let dam = Dam::new(settings.unit, settings.dam.clone(), now, unix_ms)?;
    let membership = UnitMembership::new(settings.unit, addr, &settings.units, unix_ms, now);
    let shared = Arc::new(Mutex::new(Shared {
        dam,
        waiters: HashMap::new(),
        hosts: BTreeMap::new(),
        counters: RoleCounters::default(),
    }));
    let wake = Arc::new(Notify::new());
    let handle = SessionStoreHandle {
        unit: settings.unit,
        addr,
        shared: Arc::clone(&shared),
        wake: Arc::clone(&wake),
        transport: Arc::clone(endpoint.counters()),
        unit_names: Arc::new(settings.unit_names.clone()),
        host_names: Arc::new(settings.hosts.clone()),
    };
    let task = Task {
        settings,
        endpoint,
        membership,
        shared,
        wake,
        outbox: Vec::new(),
    };
    Ok((handle, tokio::spawn(task.run(stop))))
}

struct Task {
    settings: SessionRoleSettings,
    endpoint: UdpEndpoint,
    membership: UnitMembership,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    outbox: Vec<(SocketAddr, Message)>,
}

impl Task {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let wake = Arc::clone(&self.wake);
        loop {
            let deadline = {
                let shared = lock(&self.shared);
                let dam = shared.dam.poll_timeout();
                let members = self.membership.poll_timeout();
                dam.map_or(members, |d| d.min(members))
            };
            tokio::select! {
                () = &mut stopped => break,
                () = wake.notified() => {}
                received = self.endpoint.recv() => match received {
                    Ok(received) => match received.result {
                        Ok(envelope) => self.datagram(received.from, envelope.sender, &envelope.message),
                        Err(error) => tracing::debug!(%error, from = %received.from, "session datagram rejected"),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "session endpoint receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let now = Instant::now();
                    self.membership.handle_timeout(now);
                    lock(&self.shared).dam.handle_timeout(now);
                }
            }
            self.after_input();
            self.flush().await;
        }
        self.membership.leave();
        self.after_input();
        self.flush().await;
    }

    /// Applies membership changes, collects the machine's messages and answers waiters.
    fn after_input(&mut self) {
        let now = Instant::now();
        let mut shared = lock(&self.shared);
        if self.membership.take_changed() {
            let live = self.membership.live();
            if shared.dam.set_members(now, &live) {
                let names: Vec<&str> = live
                    .iter()
                    .map(|u| self.settings.unit_names.get(u).map_or("?", String::as_str))
                    .collect();
                tracing::info!(members = ?names, "session-store membership changed");
            }
        }
        while let Some(t) = shared.dam.poll_transmit() {
            if let Some(&to) = self.settings.units.get(&t.to) {
                self.outbox.push((to, t.message));
            }
        }
        while let Some(event) = shared.dam.poll_event() {
            if let DamEvent::QueryAnswered { query, atom, .. } = event
                && let Some(waiter) = shared.waiters.remove(&query)
            {
                let _ = waiter.send(atom);
            }
        }
        shared.waiters.retain(|_, w| !w.is_closed());
        drop(shared);
        while let Some((to, gossip)) = self.membership.poll_gossip() {
            self.outbox.push((to, gossip.into()));
        }
    }

    async fn flush(&mut self) {
        for (to, message) in std::mem::take(&mut self.outbox) {
            if let Err(error) = self.endpoint.send(to, &message).await {
                lock(&self.shared).counters.send_errors += 1;
                tracing::debug!(%error, "session-store datagram not sent");
            }
        }
    }

    fn ignore(&self, reason: &'static str) {
        *lock(&self.shared)
            .counters
            .ignored
            .entry(reason)
            .or_insert(0) += 1;
    }

    fn datagram(&mut self, from: SocketAddr, sender: SenderId, message: &Message) {
        let now = Instant::now();
        match message {
            Message::GroupGossip(gossip) => {
                if let Err(error) = self.membership.handle_gossip(now, sender, gossip) {
                    tracing::trace!(%error, "gossip refused");
                    self.ignore("gossip-refused");
                }
            }
            Message::AddAtom(_)
            | Message::DeleteAtom(_)
            | Message::QueryAtom(_)
            | Message::ReturnAtom(_) => {
                let unit = UnitId(sender.0);
                if !self.settings.units.contains_key(&unit) {
                    self.ignore("unknown-unit");
                    return;
                }
                let _ = lock(&self.shared).dam.handle(now, unit, message);
            }
            Message::SessionResync(_)
            | Message::SessionUp(_)
            | Message::SessionDown(_)
            | Message::SessionKeepalive(_) => {
                let host = HostId(sender.0);
                if !self.settings.hosts.contains_key(&host) {
                    self.ignore("unknown-host");
                    return;
                }
                let claimed = match message {
                    Message::SessionResync(m) => m.host,
                    Message::SessionUp(m) => m.host,
                    Message::SessionDown(m) => m.host,
                    Message::SessionKeepalive(m) => m.host,
                    _ => host,
                };
                if claimed != host {
                    self.ignore("sender-mismatch");
                    return;
                }
                let zombie = self.settings.zombie;
                let reply = lock(&self.shared).session_message(now, host, message, &zombie);
                if let Some(reply) = reply {
                    self.outbox.push((from, reply));
                }
            }
            _ => self.ignore("not-for-session-store"),
        }
    }
}

impl Shared {
    /// Applies one host message; returns the answer.
    fn session_message(
        &mut self,
        now: Instant,
        host: HostId,
        message: &Message,
        zombie: &ZombieTimes,
    ) -> Option<Message> {
        let ack = |up_to| Some(Message::from(SessionAck { up_to }));
        if let Message::SessionResync(m) = message {
            if let Some(c) = self.hosts.get_mut(&host)
                && c.channel == m.channel
            {
                c.last_seen = now;
                self.counters.duplicates += 1;
                return ack(c.last_id);
            }
            self.counters.resyncs += 1;
            let keys = self.hosts.remove(&host).map(|c| c.keys).unwrap_or_default();
            tracing::info!(
                host = host.0,
                channel = m.channel,
                sessions = m.sessions,
                "host resyncs its sessions"
            );
            self.hosts.insert(
                host,
                HostChannel {
                    channel: m.channel,
                    last_id: m.message_id,
                    resync_end: Some(m.message_id.saturating_add(m.sessions)),
                    resync_keys: BTreeSet::new(),
                    keys,
                    last_seen: now,
                },
            );
            self.maybe_finish_resync(now, host);
            return ack(m.message_id);
        }
        let Some(c) = self.hosts.get_mut(&host) else {
            self.counters.resync_requests += 1;
            return Some(SessionResyncRequest { known_channel: 0 }.into());
        };
        c.last_seen = now;
        let id = match message {
            Message::SessionKeepalive(m) => {
                if m.channel != c.channel {
                    self.counters.resync_requests += 1;
                    return Some(
                        SessionResyncRequest {
                            known_channel: c.channel,
                        }
                        .into(),
                    );
                }
                self.counters.keepalives += 1;
                return ack(c.last_id);
            }
            Message::SessionUp(m) => m.message_id,
            Message::SessionDown(m) => m.message_id,
            _ => return None,
        };
        if id <= c.last_id {
            self.counters.duplicates += 1;
            return ack(c.last_id);
        }
        if id != c.last_id + 1 {
            self.counters.gaps += 1;
            return ack(c.last_id);
        }
        c.last_id = id;
        match message {
            Message::SessionUp(m) => {
                let key = m.session.key();
                if c.resync_end.is_some() {
                    c.resync_keys.insert(key.clone());
                }
                c.keys.insert(key.clone(), zombie_for(zombie, &m.session));
                self.counters.ups += 1;
                if let Err(error) = self.dam.add(now, key, host.0.to_be_bytes().to_vec(), None) {
                    self.counters.dam_errors += 1;
                    tracing::debug!(%error, "session atom not added");
                }
            }
            Message::SessionDown(m) => {
                let key = m.session.key();
                c.keys.remove(&key);
                c.resync_keys.remove(&key);
                self.counters.downs += 1;
                self.dam.delete(now, &key, zombie_for(zombie, &m.session));
            }
            _ => {}
        }
        self.maybe_finish_resync(now, host);
        ack(id)
    }

    /// Deletes the keys a completed resync did not list.
    fn maybe_finish_resync(&mut self, now: Instant, host: HostId) {
        let Some(c) = self.hosts.get_mut(&host) else {
            return;
        };
        if c.resync_end.is_none_or(|end| c.last_id < end) {
            return;
        }
        c.resync_end = None;
        let listed = std::mem::take(&mut c.resync_keys);
        let stale: Vec<(Vec<u8>, Duration)> = c
            .keys
            .iter()
            .filter(|(k, _)| !listed.contains(*k))
            .map(|(k, z)| (k.clone(), *z))
            .collect();
        for (key, _) in &stale {
            c.keys.remove(key);
        }
        for (key, zombie) in stale {
            self.counters.resync_deletes += 1;
            self.dam.delete(now, &key, zombie);
        }
    }
}

//! The LB-unit side of the health and load protocol: the consolidated
//! health and load cache (FIGS. 13B, 15, 16, 18), one per LB unit.
//!
//! Owns the cached copy of every host's table, indexed **by host** (for the
//! protocol and `ctl hosts`) and **by application** (for allotments; see
//! [`ServiceKey`]), kept consistent on every change; liveness, ageing-out
//! and resynchronisation by snapshots; the unit's answers to postulate
//! rounds; and the allotment service. Sans-I/O: the LB daemon feeds it
//! authenticated messages with their sender and the current time, and sends
//! what [`ConsolidatedCache::poll_transmit`] returns.
//!
//! Rules:
//! - A host's table (row changes, snapshots, goodbye, its heartbeat) is
//!   taken only from frames whose sender id is that host's; a group leader
//!   may forward other hosts' heartbeats in a `ConsolidatedHeartbeat`. Sender
//!   ids are self-declared by holders of the cluster secret (see "Trust
//!   model" in docs/ARCHITECTURE.md): this check keeps honest members
//!   apart, it does not authenticate hosts. The LB daemon also drops ids
//!   the configuration does not have and group members outside the
//!   leader's group before calling the cache.
//! - A heartbeat keeps its host alive. If the host is new, has no complete
//!   baseline, or the heartbeat's generation or digest differs from the
//!   cache, the unit asks the host for a snapshot (at most once per
//!   `snapshot_retry` per host). A heartbeat older than the cache (reordered
//!   behind a row change) is only a sign of life.
//! - A row change not newer than the cache is ignored, so a late or
//!   duplicated change never reverts state. A newer one is applied; if it
//!   does not follow the cached generation directly, or the host has no
//!   baseline, a snapshot is requested too.
//! - A complete snapshot at least as new as the cache replaces the host's
//!   rows and generation. Parts are collected across repeated requests
//!   (same generation and part count), so a snapshot of many parts
//!   completes on a lossy network; an incomplete one is dropped after
//!   `partial_snapshot_timeout` without a new part.
//! - A goodbye clears the host at once; its late heartbeats (same or older
//!   generation) are ignored for `host_dead_after`. A host without a
//!   heartbeat for `host_dead_after` ages out. A host whose heartbeats stay
//!   older than the cache for `host_dead_after` restarted with a lower
//!   generation: the cache drops its baseline and resynchronises.
//! - Every postulate round is answered, with an empty list when the unit
//!   holds every postulated target (see [`crate::handshake`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use switchyard_wire::allotment::{AffinityAllotmentResponse, AllotmentRequest, AllotmentResponse};
use switchyard_wire::health::{
    ContentCheck, GetTableSnapshot, Heartbeat, PostulateTableState, PostulateWrong, Row, RowChange,
    RowOp, SendTableSnapshot, WrongPostulate,
};
use switchyard_wire::{AppId, HostId, Message, Protocol, SenderId, UnitId};

use crate::Transmit;
use crate::allotment::{self, AllotmentSource};
use crate::counters::CacheCounters;
use crate::error::{HealthError, Ignored};
use crate::settings::CacheSettings;
use crate::table::{AppKey, Table, op_key};

/// A virtual service as classifiers ask for it: VIP and port, protocol and
/// protocol-specific info. Addresses are compared without IPv6 flow info
/// and scope id (the wire does not carry them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual service address and port.
    pub vip: SocketAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Protocol-specific detail.
    pub info: String,
}

impl ServiceKey {
    /// A service key (normalising the VIP).
    pub fn new(vip: SocketAddr, protocol: Protocol, info: impl Into<String>) -> Self {
        Self {
            vip: SocketAddr::new(vip.ip(), vip.port()),
            protocol,
            info: info.into(),
        }
    }

    /// The service an application endpoint belongs to.
    pub fn of_app(app: &AppId) -> Self {
        Self::new(app.vip, app.protocol, app.info.clone())
    }

    /// The service an allotment request asks for.
    pub fn of_request(request: &AllotmentRequest) -> Self {
        Self::new(request.vip, request.protocol, request.info.clone())
    }
}

impl Ord for ServiceKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.vip
            .cmp(&other.vip)
            .then(self.protocol.tag().cmp(&other.protocol.tag()))
            .then_with(|| self.info.cmp(&other.info))
    }
}

impl PartialOrd for ServiceKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone)]
struct Partial {
    generation: u64,
    parts: u16,
    received: BTreeMap<u16, Vec<Row>>,
    /// When a part not received before last arrived.
    progress: Instant,
}

#[derive(Debug, Clone)]
struct HostEntry {
    table: Table,
    name: Option<String>,
    address: Option<SocketAddr>,
    last_heartbeat: Instant,
    /// Last heartbeat whose generation was not older than the cache.
    last_current_heartbeat: Instant,
    /// The rows are a complete copy at `table.generation()` (from a
    /// snapshot, then contiguous row changes).
    baseline: bool,
    in_sync: bool,
    last_snapshot_request: Option<Instant>,
    partial: Option<Partial>,
}

/// One host as `ctl hosts` shows it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HostView<'a> {
    /// The host.
    pub host: HostId,
    /// Its DNS name, once a heartbeat carried it.
    pub name: Option<&'a str>,
    /// Its agent's address, once a heartbeat carried it.
    pub address: Option<SocketAddr>,
    /// When its last heartbeat arrived.
    pub last_heartbeat: Instant,
    /// The cached generation.
    pub generation: u64,
    /// Whether the last check found the cache equal to the host's table.
    pub in_sync: bool,
    /// Whether the cache holds a complete copy (else a resync is pending).
    pub baseline: bool,
    /// The cached rows.
    pub table: &'a Table,
}

/// One host's row for a service.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CachedEndpoint<'a> {
    /// The host.
    pub host: HostId,
    /// Its row.
    pub row: &'a Row,
}

/// The consolidated health and load cache of one LB unit. See the
/// [module docs](self).
#[derive(Debug)]
pub struct ConsolidatedCache {
    settings: CacheSettings,
    now: Instant,
    hosts: BTreeMap<HostId, HostEntry>,
    by_service: BTreeMap<ServiceKey, BTreeSet<(HostId, AppKey)>>,
    /// Hosts that said goodbye: generation at goodbye and when.
    departed: BTreeMap<HostId, (u64, Instant)>,
    queue: VecDeque<Transmit<SenderId>>,
    counters: CacheCounters,
}

impl ConsolidatedCache {
    /// An empty cache.
    pub fn new(settings: CacheSettings, now: Instant) -> Result<Self, HealthError> {
        settings.validate()?;
        Ok(Self {
            settings,
            now,
            hosts: BTreeMap::new(),
            by_service: BTreeMap::new(),
            departed: BTreeMap::new(),
            queue: VecDeque::new(),
            counters: CacheCounters::default(),
        })
    }

    /// This unit.
    pub fn unit(&self) -> UnitId {
        self.settings.unit
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// Counters.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// One host.
    pub fn host(&self, host: HostId) -> Option<HostView<'_>> {
        self.hosts.get(&host).map(|e| Self::host_view(host, e))
    }

    /// Every host, by id.
    pub fn hosts(&self) -> impl Iterator<Item = HostView<'_>> + '_ {
        self.hosts.iter().map(|(h, e)| Self::host_view(*h, e))
    }

    fn host_view(host: HostId, e: &HostEntry) -> HostView<'_> {
        HostView {
            host,
            name: e.name.as_deref(),
            address: e.address,
            last_heartbeat: e.last_heartbeat,
            generation: e.table.generation(),
            in_sync: e.in_sync,
            baseline: e.baseline,
            table: &e.table,
        }
    }

    /// Every cached host's row for `service`, by host.
    pub fn endpoints(&self, service: &ServiceKey) -> Vec<CachedEndpoint<'_>> {
        let Some(set) = self.by_service.get(service) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|(host, key)| {
                let row = self.hosts.get(host)?.table.get_by_key(key)?;
                Some(CachedEndpoint { host: *host, row })
            })
            .collect()
    }

    /// Every service with at least one cached row.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> + '_ {
        self.by_service.keys()
    }

    /// Whether the application index matches the host tables exactly (a
    /// self-check for tests and diagnostics).
    pub fn index_is_consistent(&self) -> bool {
        let mut expected: BTreeMap<ServiceKey, BTreeSet<(HostId, AppKey)>> = BTreeMap::new();
        for (host, e) in &self.hosts {
            for (key, row) in e.table.entries() {
                expected
                    .entry(ServiceKey::of_app(&row.app))
                    .or_default()
                    .insert((*host, key.clone()));
            }
        }
        expected == self.by_service
    }

    /// Whether `host` is alive at `now` (heartbeat within `host_dead_after`).
    pub fn is_alive(&self, host: HostId, now: Instant) -> bool {
        self.hosts.get(&host).is_some_and(|e| {
            now.saturating_duration_since(e.last_heartbeat) < self.settings.host_dead_after
        })
    }

    /// The allotment for `request` from the rows of alive hosts, counted
    /// in [`CacheCounters::allotments`].
    pub fn allot(&mut self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse {
        self.counters.allotments += 1;
        self.preview(request, now)
    }

    /// The allotment [`Self::allot`] would hand out for `request` at `now`,
    /// without counting it (for `ctl` and diagnostics).
    pub fn preview(&self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse {
        allotment::allot(
            request,
            self.alive_endpoints(request, now),
            &self.settings.allotment,
        )
    }

    /// The endpoints of alive hosts for the service `request` asks about.
    fn alive_endpoints(
        &self,
        request: &AllotmentRequest,
        now: Instant,
    ) -> impl Iterator<Item = (HostId, &Row)> {
        self.endpoints(&ServiceKey::of_request(request))
            .into_iter()
            .filter(move |e| self.is_alive(e.host, now))
            .map(|e| (e.host, e.row))
    }

    /// [`Self::allot`] with the endpoints that take only affinitized traffic, for a
    /// request router ([`allotment::allot_with_affinity`]; counted as an allotment).
    pub fn allot_with_affinity(
        &mut self,
        request: &AllotmentRequest,
        now: Instant,
    ) -> AffinityAllotmentResponse {
        self.counters.allotments += 1;
        allotment::allot_with_affinity(
            request,
            self.alive_endpoints(request, now),
            &self.settings.allotment,
        )
    }

    /// Handles an authenticated message from `from` (the frame's sender).
    pub fn handle(
        &mut self,
        now: Instant,
        from: SenderId,
        message: &Message,
    ) -> Result<(), Ignored> {
        self.now = self.now.max(now);
        self.counters.received.add(message.kind());
        let result = self.dispatch(from, message);
        if let Err(reason) = &result {
            self.counters.ignored += 1;
            if matches!(reason, Ignored::StaleGeneration { .. })
                && matches!(message, Message::RowChange(_))
            {
                self.counters.stale_row_changes += 1;
            }
            tracing::trace!(unit = %self.settings.unit, %reason, "message ignored");
        }
        result
    }

    fn dispatch(&mut self, from: SenderId, message: &Message) -> Result<(), Ignored> {
        match message {
            Message::Heartbeat(hb) => {
                check_sender(from, hb.host)?;
                self.heartbeat(hb)
            }
            Message::ConsolidatedHeartbeat(c) => {
                check_sender(from, c.leader)?;
                // Members' heartbeats are handled one by one; one member's
                // late heartbeat does not spoil the others.
                for hb in &c.heartbeats {
                    let _ = self.heartbeat(hb);
                }
                Ok(())
            }
            Message::RowChange(rc) => {
                check_sender(from, rc.host)?;
                self.row_change(rc)
            }
            Message::SendTableSnapshot(s) => {
                check_sender(from, s.host)?;
                self.snapshot_part(s)
            }
            Message::Goodbye(g) => {
                check_sender(from, g.host)?;
                self.goodbye(g.host)
            }
            Message::PostulateTableState(p) => {
                check_sender(from, p.host)?;
                self.postulate(p);
                Ok(())
            }
            Message::AllotmentRequest(req) => {
                let response = self.allot(req, self.now);
                self.send(from, Message::from(response));
                Ok(())
            }
            Message::AffinityAllotmentRequest(req) => {
                let response = self.allot_with_affinity(&req.request, self.now);
                self.send(from, Message::from(response));
                Ok(())
            }
            other => Err(Ignored::NotForThisMachine(other.kind())),
        }
    }

    /// Clears `host` at once. Idempotent: hosts repeat their goodbye (one
    /// lost datagram must not leave a host to age out), so a duplicate
    /// keeps the generation recorded by the first (the highest seen) and
    /// its time; otherwise a duplicate would record generation 0 and let
    /// a late heartbeat bring the host back as a ghost.
    fn goodbye(&mut self, host: HostId) -> Result<(), Ignored> {
        let now = self.now;
        let generation = self.hosts.get(&host).map(|e| e.table.generation());
        let known = generation.is_some();
        let departed = self.departed.get(&host).copied();
        let generation = generation.unwrap_or(0).max(departed.map_or(0, |(g, _)| g));
        let at = departed.map_or(now, |(_, at)| at);
        self.departed.insert(host, (generation, at));
        if self.remove_host(host) {
            self.counters.goodbyes += 1;
            tracing::info!(unit = %self.settings.unit, %host, "host said goodbye");
            Ok(())
        } else if departed.is_some() || known {
            Ok(()) // a repeated goodbye
        } else {
            Err(Ignored::UnknownHost(host))
        }
    }

    fn heartbeat(&mut self, hb: &Heartbeat) -> Result<(), Ignored> {
        let now = self.now;
        let host = hb.host;
        let hb_generation = match hb.check {
            ContentCheck::Table { generation, .. } => Some(generation),
            ContentCheck::Chunks(_) => None,
        };
        if let Some(&(generation, at)) = self.departed.get(&host) {
            let recent = now.saturating_duration_since(at) < self.settings.host_dead_after;
            if recent && hb_generation.is_none_or(|g| g <= generation) {
                return Err(Ignored::Departed(host));
            }
            self.departed.remove(&host);
        }
        let entry = self.hosts.entry(host).or_insert_with(|| HostEntry {
            table: Table::new(0),
            name: None,
            address: None,
            last_heartbeat: now,
            last_current_heartbeat: now,
            baseline: false,
            in_sync: false,
            last_snapshot_request: None,
            partial: None,
        });
        entry.last_heartbeat = now;
        if hb.name.is_some() {
            entry.name.clone_from(&hb.name);
        }
        if hb.address.is_some() {
            entry.address = hb.address;
        }
        let resync = match hb.check {
            ContentCheck::Table { generation, digest } => {
                if generation < entry.table.generation() {
                    // Reordered behind a newer row change: only a sign of life.
                    false
                } else {
                    entry.last_current_heartbeat = now;
                    let same = entry.baseline
                        && generation == entry.table.generation()
                        && digest == entry.table.digest();
                    entry.in_sync = same;
                    !same
                }
            }
            // Per-chunk checks are not produced by this implementation;
            // they only keep the host alive (and bootstrap it).
            ContentCheck::Chunks(_) => !entry.baseline,
        };
        if resync {
            self.request_snapshot(host);
        }
        Ok(())
    }

    fn row_change(&mut self, rc: &RowChange) -> Result<(), Ignored> {
        let keyed = rc
            .ops
            .iter()
            .map(|op| op_key(op).map(|k| (k, op)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Ignored::InvalidRow)?;
        let Some(entry) = self.hosts.get_mut(&rc.host) else {
            return Err(Ignored::UnknownHost(rc.host));
        };
        let cached = entry.table.generation();
        if rc.generation <= cached {
            return Err(Ignored::StaleGeneration {
                host: rc.host,
                generation: rc.generation,
                cached,
            });
        }
        let contiguous = entry.baseline && Some(rc.generation) == cached.checked_add(1);
        for (key, op) in keyed {
            match op {
                RowOp::Add(row) | RowOp::Update(row) => {
                    let old = entry.table.insert(key.clone(), row.clone());
                    if let Some(old) = old {
                        index_remove(&mut self.by_service, rc.host, &key, &old.app);
                    }
                    index_insert(&mut self.by_service, rc.host, key, &row.app);
                }
                RowOp::Delete(_) => {
                    if let Some(old) = entry.table.remove(&key) {
                        index_remove(&mut self.by_service, rc.host, &key, &old.app);
                    }
                }
            }
        }
        entry.table.set_generation(rc.generation);
        if !contiguous {
            entry.baseline = false;
            entry.in_sync = false;
            self.request_snapshot(rc.host);
        }
        Ok(())
    }

    fn snapshot_part(&mut self, s: &SendTableSnapshot) -> Result<(), Ignored> {
        let now = self.now;
        let keyed = s
            .rows
            .iter()
            .map(|row| AppKey::new(&row.app).map(|_| ()))
            .collect::<Result<Vec<_>, _>>();
        keyed.map_err(Ignored::InvalidRow)?;
        let Some(entry) = self.hosts.get_mut(&s.host) else {
            return Err(Ignored::UnknownHost(s.host));
        };
        let cached = entry.table.generation();
        if s.generation < cached {
            return Err(Ignored::StaleGeneration {
                host: s.host,
                generation: s.generation,
                cached,
            });
        }
        let partial = match &mut entry.partial {
            Some(p) if p.generation == s.generation && p.parts == s.parts => p,
            Some(p) if p.generation > s.generation => {
                return Err(Ignored::StaleGeneration {
                    host: s.host,
                    generation: s.generation,
                    cached: p.generation,
                });
            }
            slot => slot.insert(Partial {
                generation: s.generation,
                parts: s.parts,
                received: BTreeMap::new(),
                progress: now,
            }),
        };
        if partial.received.insert(s.part, s.rows.clone()).is_none() {
            partial.progress = now;
        }
        if partial.received.len() < usize::from(partial.parts) {
            return Ok(());
        }
        let Some(done) = entry.partial.take() else {
            return Ok(());
        };
        // Replace the host's rows: unindex the old, index the new.
        for (key, row) in entry.table.entries() {
            index_remove(&mut self.by_service, s.host, key, &row.app);
        }
        entry.table.clear();
        for row in done.received.into_values().flatten() {
            // Checked above: every row's id encodes.
            if let Ok(key) = AppKey::new(&row.app) {
                index_insert(&mut self.by_service, s.host, key.clone(), &row.app);
                entry.table.insert(key, row);
            }
        }
        entry.table.set_generation(done.generation);
        entry.baseline = true;
        entry.in_sync = true;
        self.counters.snapshots_completed += 1;
        tracing::debug!(unit = %self.settings.unit, host = %s.host, generation = done.generation, "snapshot applied");
        Ok(())
    }

    fn postulate(&mut self, p: &PostulateTableState) {
        let table = self.hosts.get(&p.host).map(|e| &e.table);
        let wrong: Vec<WrongPostulate> = p
            .postulates
            .iter()
            .filter_map(|postulate| {
                let actual = table
                    .and_then(|t| t.get(&postulate.app))
                    .map(|row| row.directive.target);
                (actual != Some(postulate.state)).then(|| WrongPostulate {
                    app: postulate.app.clone(),
                    actual,
                })
            })
            .collect();
        self.counters.postulate_replies += 1;
        let answer = PostulateWrong {
            host: p.host,
            unit: self.settings.unit,
            round: p.round,
            wrong,
        };
        self.send(SenderId::from(p.host), Message::from(answer));
    }

    fn request_snapshot(&mut self, host: HostId) {
        let now = self.now;
        let retry = self.settings.snapshot_retry;
        let Some(entry) = self.hosts.get_mut(&host) else {
            return;
        };
        if entry
            .last_snapshot_request
            .is_some_and(|t| now.saturating_duration_since(t) < retry)
        {
            return;
        }
        entry.last_snapshot_request = Some(now);
        self.counters.snapshots_requested += 1;
        let get = GetTableSnapshot {
            requester: self.settings.unit,
        };
        self.send(SenderId::from(host), Message::from(get));
    }

    fn remove_host(&mut self, host: HostId) -> bool {
        let Some(entry) = self.hosts.remove(&host) else {
            return false;
        };
        for (key, row) in entry.table.entries() {
            index_remove(&mut self.by_service, host, key, &row.app);
        }
        true
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<SenderId>> {
        self.queue.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dead = self.settings.host_dead_after;
        let partial = self.settings.partial_snapshot_timeout;
        self.hosts
            .values()
            .flat_map(|e| {
                [
                    e.last_heartbeat.checked_add(dead),
                    e.last_current_heartbeat.checked_add(dead),
                    e.partial
                        .as_ref()
                        .and_then(|p| p.progress.checked_add(partial)),
                ]
            })
            .flatten()
            .min()
    }

    /// Ages out silent hosts, resynchronises hosts whose generation went
    /// backwards, and drops stale partial snapshots.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        let dead = self.settings.host_dead_after;
        let partial_timeout = self.settings.partial_snapshot_timeout;
        let expired: Vec<HostId> = self
            .hosts
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_heartbeat) >= dead)
            .map(|(h, _)| *h)
            .collect();
        for host in expired {
            self.remove_host(host);
            self.counters.age_outs += 1;
            tracing::info!(unit = %self.settings.unit, %host, "host aged out");
        }
        for (host, e) in &mut self.hosts {
            if now.saturating_duration_since(e.last_current_heartbeat) >= dead {
                // Every heartbeat for a whole dead interval was older than
                // the cache: the host restarted with a lower generation.
                e.table.set_generation(0);
                e.baseline = false;
                e.in_sync = false;
                e.last_current_heartbeat = now;
                self.counters.generation_resets += 1;
                tracing::warn!(unit = %self.settings.unit, %host, "host generation went backwards; resynchronising");
            }
            if e.partial
                .as_ref()
                .is_some_and(|p| now.saturating_duration_since(p.progress) >= partial_timeout)
            {
                e.partial = None;
                self.counters.partial_snapshots_dropped += 1;
            }
        }
        self.departed
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < dead);
    }

    fn send(&mut self, to: SenderId, message: Message) {
        self.counters.sent.add(message.kind());
        self.queue.push_back(Transmit { to, message });
    }
}

impl AllotmentSource for ConsolidatedCache {
    fn allot(&mut self, request: &AllotmentRequest, now: Instant) -> AllotmentResponse {
        ConsolidatedCache::allot(self, request, now)
    }
}

fn check_sender(from: SenderId, host: HostId) -> Result<(), Ignored> {
    let claimed = SenderId::from(host);
    if from == claimed {
        Ok(())
    } else {
        Err(Ignored::SenderMismatch {
            sender: from,
            claimed,
        })
    }
}

fn index_insert(
    index: &mut BTreeMap<ServiceKey, BTreeSet<(HostId, AppKey)>>,
    host: HostId,
    key: AppKey,
    app: &AppId,
) {
    index
        .entry(ServiceKey::of_app(app))
        .or_default()
        .insert((host, key));
}

fn index_remove(
    index: &mut BTreeMap<ServiceKey, BTreeSet<(HostId, AppKey)>>,
    host: HostId,
    key: &AppKey,
    app: &AppId,
) {
    let service = ServiceKey::of_app(app);
    if let Some(set) = index.get_mut(&service) {
        set.remove(&(host, key.clone()));
        if set.is_empty() {
            index.remove(&service);
        }
    }
}

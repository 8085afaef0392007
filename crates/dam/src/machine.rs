//! [`Dam`]: one LB unit's portion of the distributed atom manager.
//!
//! See the crate header for the protocol; this module is its state machine.
//! Invariants kept here (checked by [`Dam::is_consistent`]):
//! - every push `(key, unit)` is either queued (in `push_queue`) or in
//!   flight (in `inflight` and `retries`), never both, and only for a key
//!   the table holds;
//! - every pending query is indexed by key and by deadline;
//! - the table's indexes and gauges agree with its entries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use switchyard_wire::dam::{
    AddAtom, Atom, AtomMeta, DeleteAtom, MAX_ATOM_DATA_LEN, MAX_ATOM_KEY_LEN, QueryAtom, ReturnAtom,
};
use switchyard_wire::{Message, UnitId};

use crate::counters::DamCounters;
use crate::error::{DamError, Ignored};
use crate::placement;
use crate::settings::DamSettings;
use crate::table::{Holding, Slot, Table};
use crate::version::{Clock, VersionClock, millis, outranks};

/// A message for a peer unit: what [`Dam::poll_transmit`] returns. The
/// daemon seals `message` and sends it on its stream to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: UnitId,
    /// The message.
    pub message: Message,
}

/// Identifies one [`Dam::query`] call that went remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// What [`Dam::query`] found at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// The atom is in the local table (check `atom.meta.zombie`).
    Hit {
        /// The atom.
        atom: Atom,
        /// Owned or handed-off copy (a local hit), or cache entry.
        holding: Holding,
    },
    /// Other units were asked; a [`DamEvent::QueryAnswered`] with this id
    /// follows (possibly from the very next [`Dam::poll_event`]).
    Pending(QueryId),
}

/// What [`Dam::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The local copy became this zombie, which is pushed to the owners.
    Deleted(Atom),
    /// The atom was already a zombie; nothing changed.
    AlreadyZombie(Atom),
    /// No copy here: a `DeleteAtom` went to this many other live units; the
    /// owners among them turn their copies into zombies.
    Forwarded(usize),
}

/// Something the caller must learn about, from [`Dam::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamEvent {
    /// A pending query finished: the atom (zombie or not), or `None` if no
    /// live unit had it.
    QueryAnswered {
        /// The id [`Dam::query`] returned.
        query: QueryId,
        /// The key asked for.
        key: Vec<u8>,
        /// The answer.
        atom: Option<Atom>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushState {
    Queued {
        attempts: u32,
    },
    InFlight {
        call_id: u64,
        attempts: u32,
        due: u64,
    },
}

#[derive(Debug, Clone)]
struct PendingQuery {
    key: Vec<u8>,
    waiters: Vec<QueryId>,
    /// Second stage: every live unit not asked in the first.
    broadcast: bool,
    /// Asked in this stage, no answer yet.
    awaiting: BTreeSet<UnitId>,
    /// Asked in any stage.
    tried: BTreeSet<UnitId>,
    /// Rounds sent in this stage.
    rounds: u32,
    due: u64,
}

/// Where the re-evaluation of held atoms after a membership change stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scan {
    Idle,
    /// Keys after this one (all keys if `None`) are still to be evaluated.
    After(Option<Vec<u8>>),
}

/// One LB unit's DAM portion. See the crate documentation.
#[derive(Debug)]
pub struct Dam {
    id: UnitId,
    settings: DamSettings,
    clock: Clock,
    now: Instant,
    now_ms: u64,
    versions: VersionClock,
    /// Live units (this one included) and the epoch at which each joined.
    members: BTreeMap<UnitId, u64>,
    member_list: Vec<UnitId>,
    epoch: u64,
    table: Table,
    next_call: u64,
    next_query: u64,
    pushes: BTreeMap<(Vec<u8>, UnitId), PushState>,
    push_queue: VecDeque<(Vec<u8>, UnitId)>,
    inflight: BTreeMap<u64, (Vec<u8>, UnitId)>,
    retries: BTreeSet<(u64, u64)>,
    queries: BTreeMap<u64, PendingQuery>,
    query_by_key: BTreeMap<Vec<u8>, u64>,
    query_deadlines: BTreeSet<(u64, u64)>,
    scan: Scan,
    next_pace: Option<u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DamEvent>,
    counters: DamCounters,
}

impl Dam {
    /// A DAM portion for unit `id`, alone in its membership until
    /// [`Self::set_members`]. `now` and `unix_ms` are the same moment on the
    /// monotonic and the wall clock: the daemon reads both once, here, and
    /// the machine maps atom expiries (Unix ms on the wire) through them.
    pub fn new(
        id: UnitId,
        settings: DamSettings,
        now: Instant,
        unix_ms: u64,
    ) -> Result<Self, DamError> {
        settings.validate()?;
        let clock = Clock::new(now, unix_ms);
        Ok(Self {
            id,
            settings,
            clock,
            now,
            now_ms: 0,
            versions: VersionClock::default(),
            members: BTreeMap::from([(id, 0)]),
            member_list: vec![id],
            epoch: 0,
            table: Table::new(clock),
            next_call: 1,
            next_query: 1,
            pushes: BTreeMap::new(),
            push_queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            retries: BTreeSet::new(),
            queries: BTreeMap::new(),
            query_by_key: BTreeMap::new(),
            query_deadlines: BTreeSet::new(),
            scan: Scan::Idle,
            next_pace: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: DamCounters::default(),
        })
    }

    /// This unit.
    pub fn id(&self) -> UnitId {
        self.id
    }

    /// The settings.
    pub fn settings(&self) -> &DamSettings {
        &self.settings
    }

    /// Live units as last set (this unit included), ascending.
    pub fn members(&self) -> &[UnitId] {
        &self.member_list
    }

    /// The owners of `key` among the live units, primary first.
    pub fn owners(&self, key: &[u8]) -> Vec<UnitId> {
        placement::owners(key, &self.member_list, self.settings.replication)
    }

    /// The local copy of `key` and how it is held, if present and not past
    /// its deadline (as of the last call). Does not count as a use.
    pub fn get(&self, key: &[u8]) -> Option<(&Atom, Holding)> {
        self.table
            .get(key)
            .filter(|s| !s.is_gone(self.now_ms))
            .map(|s| (&s.atom, s.holding))
    }

    /// Every local copy (deadlines not checked), in key order.
    pub fn atoms(&self) -> impl Iterator<Item = (&Atom, Holding)> + '_ {
        self.table.iter().map(|s| (&s.atom, s.holding))
    }

    /// Replication lag: pushes queued or awaiting acknowledgement.
    pub fn replication_lag(&self) -> usize {
        self.pushes.len()
    }

    /// Whether a membership change is still being worked through (owners
    /// to recompute, or pushes pending).
    pub fn is_settled(&self) -> bool {
        self.scan == Scan::Idle && self.pushes.is_empty()
    }

    /// Gauges and counts. The rebalance gauge walks the held keys not yet
    /// re-evaluated (O(n) while a rebalance is under way).
    pub fn counters(&self) -> DamCounters {
        let mut c = self.counters.clone();
        let stats = self.table.stats();
        c.atoms_owned = stats.owned;
        c.atoms_handoff = stats.handoff;
        c.atoms_cached = stats.cached;
        c.zombies = stats.zombies;
        c.memory_bytes = stats.bytes;
        c.pushes_pending = self.pushes.len() as u64;
        c.queries_pending = self.queries.len() as u64;
        c.rebalance_pending = match &self.scan {
            Scan::Idle => 0,
            Scan::After(k) => self.table.held_from(k.as_deref()) as u64,
        };
        c
    }

    // ----- local calls -------------------------------------------------

    /// Adds (or replaces) the atom `key` → `data`, expiring after `ttl`
    /// (`None`: never). The unit keeps a copy (owned, or handed off until
    /// the owners acknowledge it) and pushes it to the other owners.
    pub fn add(
        &mut self,
        now: Instant,
        key: Vec<u8>,
        data: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<Atom, DamError> {
        if key.len() > MAX_ATOM_KEY_LEN {
            return Err(DamError::KeyTooLong {
                len: key.len(),
                max: MAX_ATOM_KEY_LEN,
            });
        }
        if data.len() > MAX_ATOM_DATA_LEN {
            return Err(DamError::DataTooLong {
                len: data.len(),
                max: MAX_ATOM_DATA_LEN,
            });
        }
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(DamError::ZeroTtl);
        }
        self.advance(now);
        let unix = self.clock.unix_ms(self.now_ms);
        let known = self.table.get(&key).map(|s| s.atom.meta.version);
        let atom = Atom {
            meta: AtomMeta {
                added_by: self.id,
                version: self.versions.next(unix, known),
                zombie: false,
                expires_at_ms: ttl.map_or(0, |t| unix.saturating_add(millis(t)).max(1)),
            },
            key,
            data,
        };
        self.counters.adds += 1;
        self.write_local(atom.clone());
        Ok(atom)
    }

    /// Deletes `key`: the atom becomes a zombie for `zombie_for` (at least
    /// `min_zombie`), still answering queries flagged as a zombie so late
    /// packets reach the old host, then expires everywhere.
    pub fn delete(&mut self, now: Instant, key: &[u8], zombie_for: Duration) -> DeleteOutcome {
        self.advance(now);
        let zombie_ms = self.zombie_ms(zombie_for);
        match self.table.get(key).filter(|s| !s.is_gone(self.now_ms)) {
            Some(slot) if slot.atom.meta.zombie => DeleteOutcome::AlreadyZombie(slot.atom.clone()),
            Some(slot) => {
                let mut atom = slot.atom.clone();
                let unix = self.clock.unix_ms(self.now_ms);
                atom.meta.version = self.versions.next(unix, Some(atom.meta.version));
                atom.meta.zombie = true;
                atom.meta.expires_at_ms = unix.saturating_add(u64::from(zombie_ms));
                self.counters.deletes += 1;
                let owners = self.write_local(atom.clone());
                if self.settings.invalidate_caches_on_delete {
                    let others: Vec<UnitId> = self
                        .member_list
                        .iter()
                        .copied()
                        .filter(|u| *u != self.id && !owners.contains(u))
                        .collect();
                    for to in others {
                        self.send_delete(to, key, zombie_ms);
                    }
                }
                DeleteOutcome::Deleted(atom)
            }
            None => {
                self.counters.deletes_forwarded += 1;
                let others: Vec<UnitId> = self
                    .member_list
                    .iter()
                    .copied()
                    .filter(|u| *u != self.id)
                    .collect();
                for &to in &others {
                    self.send_delete(to, key, zombie_ms);
                }
                DeleteOutcome::Forwarded(others.len())
            }
        }
    }

    /// Looks `key` up: a local hit (owned or handed-off copy, zombies
    /// included, or a live cache entry), or a query to the owners, then to
    /// every live unit, answered by a [`DamEvent::QueryAnswered`].
    pub fn query(&mut self, now: Instant, key: &[u8]) -> QueryResult {
        self.advance(now);
        // A cached zombie is only a hint (the key may have been added again
        // elsewhere): the owners are asked, and it answers if they cannot.
        let usable = |s: &&Slot| {
            let hint = s.holding == Holding::Cached && s.atom.meta.zombie;
            !hint && !s.is_gone(self.now_ms)
        };
        if let Some(slot) = self.table.get(key).filter(usable) {
            let (atom, holding) = (slot.atom.clone(), slot.holding);
            if holding == Holding::Cached {
                self.counters.cache_hits += 1;
                self.table.touch(key);
            } else {
                self.counters.local_hits += 1;
            }
            return QueryResult::Hit { atom, holding };
        }
        self.counters.remote_queries += 1;
        let id = QueryId(self.next_query);
        self.next_query += 1;
        if let Some(call_id) = self.query_by_key.get(key)
            && let Some(q) = self.queries.get_mut(call_id)
        {
            q.waiters.push(id);
            return QueryResult::Pending(id);
        }
        let call_id = self.call_id();
        let owners: BTreeSet<UnitId> = self
            .owners(key)
            .into_iter()
            .filter(|u| *u != self.id)
            .collect();
        self.queries.insert(
            call_id,
            PendingQuery {
                key: key.to_vec(),
                waiters: vec![id],
                broadcast: false,
                awaiting: owners.clone(),
                tried: owners,
                rounds: 0,
                due: self.now_ms,
            },
        );
        self.query_by_key.insert(key.to_vec(), call_id);
        self.query_deadlines.insert((self.now_ms, call_id));
        self.query_round(call_id);
        QueryResult::Pending(id)
    }

    /// Applies the live membership (from SWIM). This unit is always a
    /// member. Starts re-evaluating held atoms if the set changed; returns
    /// whether it did.
    pub fn set_members(&mut self, now: Instant, members: &[UnitId]) -> bool {
        self.advance(now);
        let mut live: BTreeSet<UnitId> = members.iter().copied().collect();
        live.insert(self.id);
        if live.iter().eq(self.members.keys()) {
            return false;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        self.members.retain(|u, _| live.contains(u));
        for &u in &live {
            self.members.entry(u).or_insert(epoch);
        }
        self.member_list = live.into_iter().collect();
        self.counters.membership_changes += 1;
        tracing::debug!(unit = %self.id, members = self.member_list.len(), epoch, "DAM membership changed");

        // Pushes to departed units end; the scan re-targets their atoms.
        let gone: Vec<(Vec<u8>, UnitId)> = self
            .pushes
            .keys()
            .filter(|(_, u)| !self.members.contains_key(u))
            .cloned()
            .collect();
        for (key, to) in gone {
            self.counters.pushes_dropped += 1;
            self.finish_push(&key, to);
        }
        // Queries stop waiting for departed units.
        let calls: Vec<u64> = self.queries.keys().copied().collect();
        for call_id in calls {
            let Some(q) = self.queries.get_mut(&call_id) else {
                continue;
            };
            let members = &self.members;
            q.awaiting.retain(|u| members.contains_key(u));
            if q.awaiting.is_empty() {
                self.next_stage(call_id);
            }
        }
        self.scan = Scan::After(None);
        self.want_pace();
        true
    }

    // ----- messages ------------------------------------------------------

    /// Handles an authenticated DAM message from unit `from`.
    pub fn handle(&mut self, now: Instant, from: UnitId, message: &Message) -> Result<(), Ignored> {
        self.advance(now);
        self.counters.received.add(message.kind());
        let result = match message {
            _ if from == self.id => Err(Ignored::FromSelf),
            Message::AddAtom(m) => {
                self.on_add(from, m);
                Ok(())
            }
            Message::DeleteAtom(m) => self.on_delete(m),
            Message::QueryAtom(m) => {
                self.on_query(from, m);
                Ok(())
            }
            Message::ReturnAtom(m) => self.on_return(from, m),
            other => Err(Ignored::NotDam(other.kind())),
        };
        if let Err(reason) = &result {
            self.counters.ignored += 1;
            tracing::trace!(unit = %self.id, %from, %reason, "DAM message ignored");
        }
        result
    }

    fn on_add(&mut self, from: UnitId, m: &AddAtom) {
        let atom = &m.atom;
        let key = atom.key.clone();
        let current = self.table.get(&key).filter(|s| !s.is_gone(self.now_ms));
        if self.is_expired(atom) {
            // Its lifetime is over; a lower state held here ends with it.
            if current.is_some_and(|s| outranks(atom, &s.atom)) {
                self.drop_key(&key);
            }
            self.send(
                from,
                ReturnAtom {
                    call_id: m.call_id,
                    key,
                    atom: None,
                }
                .into(),
            );
            return;
        }
        let owners = self.owners(&key);
        let holding = self.holding_for(&owners);
        match current {
            Some(slot) if slot.holding != Holding::Cached && !outranks(atom, &slot.atom) => {
                self.counters.stale_updates += 1;
            }
            Some(slot) if slot.holding != Holding::Cached => {
                let atom = atom.clone();
                self.table.modify(&key, |s| {
                    s.atom = atom;
                    s.source = from;
                });
            }
            cached_or_none => {
                // A cache entry becomes a held copy; the greater state wins.
                let state = match cached_or_none {
                    Some(slot) if !outranks(atom, &slot.atom) => {
                        self.counters.stale_updates += 1;
                        slot.atom.clone()
                    }
                    _ => atom.clone(),
                };
                let mut slot = Slot::new(state, holding, from);
                slot.owners = owners.clone();
                slot.evaluated_at = self.epoch;
                self.table.insert(slot);
                if holding == Holding::Handoff {
                    // The sender sees this unit as an owner, this unit does
                    // not (their views differ for now): pass it on.
                    let me = self.id;
                    for &to in owners.iter().filter(|&&u| u != me && u != from) {
                        self.enqueue_push(&key, to);
                    }
                }
            }
        }
        let held = self.table.get(&key).map(|s| s.atom.clone());
        self.send(
            from,
            ReturnAtom {
                call_id: m.call_id,
                key: key.clone(),
                atom: held,
            }
            .into(),
        );
        self.settle_handoff(&key);
    }

    fn on_delete(&mut self, m: &DeleteAtom) -> Result<(), Ignored> {
        let Some(slot) = self.table.get(&m.key).filter(|s| !s.is_gone(self.now_ms)) else {
            return Err(Ignored::NothingToDelete);
        };
        if slot.atom.meta.zombie {
            return Err(Ignored::NothingToDelete);
        }
        let unix = self.clock.unix_ms(self.now_ms);
        let zombie_ms = self.zombie_ms(Duration::from_millis(u64::from(m.zombie_ms)));
        let expires = unix.saturating_add(u64::from(zombie_ms));
        match slot.holding {
            Holding::Cached => {
                // Only a hint: keep the version (the owners' zombie outranks
                // this one), but never answer "live" again from this entry.
                self.table.modify(&m.key, |s| {
                    s.atom.meta.zombie = true;
                    s.atom.meta.expires_at_ms = expires;
                });
            }
            // A copy on its way to the owners: the deleter pushes its zombie
            // to them itself, or (if it had no copy) told them directly.
            // Writing a zombie of this copy could bury a newer write it has
            // not seen.
            Holding::Handoff => return Err(Ignored::NothingToDelete),
            Holding::Owned => {
                // A delete by a unit without a copy: this holder writes the
                // zombie and pushes it to the other owners.
                let mut atom = slot.atom.clone();
                atom.meta.version = self.versions.next(unix, Some(atom.meta.version));
                atom.meta.zombie = true;
                atom.meta.expires_at_ms = expires;
                self.counters.deletes += 1;
                self.write_local(atom);
            }
        }
        Ok(())
    }

    fn on_query(&mut self, from: UnitId, m: &QueryAtom) {
        self.counters.queries_served += 1;
        let atom = self
            .table
            .get(&m.key)
            .filter(|s| !s.is_gone(self.now_ms))
            .map(|s| s.atom.clone());
        self.send(
            from,
            ReturnAtom {
                call_id: m.call_id,
                key: m.key.clone(),
                atom,
            }
            .into(),
        );
    }

    fn on_return(&mut self, from: UnitId, m: &ReturnAtom) -> Result<(), Ignored> {
        if let Some((key, to)) = self.inflight.get(&m.call_id) {
            if *to != from {
                return Err(Ignored::WrongResponder {
                    call_id: m.call_id,
                    from,
                });
            }
            if *key != m.key {
                return Err(Ignored::KeyMismatch(m.call_id));
            }
            self.counters.pushes_acked += 1;
            let key = key.clone();
            if let Some(atom) = &m.atom {
                // The owner may hold a greater state (our add lost).
                self.absorb(atom);
            }
            self.finish_push(&key, from);
            return Ok(());
        }
        let found = m.atom.as_ref().filter(|a| !self.is_expired(a)).cloned();
        if let Some(q) = self.queries.get_mut(&m.call_id) {
            if !q.tried.contains(&from) {
                return Err(Ignored::WrongResponder {
                    call_id: m.call_id,
                    from,
                });
            }
            if q.key != m.key {
                return Err(Ignored::KeyMismatch(m.call_id));
            }
            if let Some(atom) = found {
                self.resolve(m.call_id, Some(atom));
            } else {
                q.awaiting.remove(&from);
                if q.awaiting.is_empty() {
                    self.next_stage(m.call_id);
                }
            }
            return Ok(());
        }
        // A late answer or a duplicate acknowledgement: still worth a
        // greater state for a key held here.
        match &m.atom {
            Some(atom) if atom.key == m.key && self.table.get(&m.key).is_some() => {
                self.absorb(atom);
                Ok(())
            }
            _ => Err(Ignored::UnknownCall(m.call_id)),
        }
    }

    // ----- output and time -------------------------------------------------

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DamEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.table.next_deadline(),
            self.retries.first().map(|(d, _)| *d),
            self.query_deadlines.first().map(|(d, _)| *d),
            self.next_pace,
        ]
        .into_iter()
        .flatten()
        .min()
        .and_then(|ms| self.clock.instant(ms))
    }

    /// Expires atoms, retries pushes and queries, and runs one batch of
    /// re-replication when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let now_ms = self.now_ms;
        for _ in 0..self.settings.pace_scan {
            let Some(key) = self.table.due(now_ms) else {
                break;
            };
            self.counters.expired += 1;
            self.drop_key(&key);
        }
        while let Some(&(due, call_id)) = self.retries.first() {
            if due > now_ms {
                break;
            }
            self.retries.remove(&(due, call_id));
            let Some((key, to)) = self.inflight.remove(&call_id) else {
                continue;
            };
            if let Some(PushState::InFlight { attempts, .. }) = self.pushes.get(&(key.clone(), to))
            {
                let attempts = attempts.saturating_add(1);
                self.counters.push_retries += 1;
                self.pushes
                    .insert((key.clone(), to), PushState::Queued { attempts });
                self.push_queue.push_back((key, to));
                self.want_pace();
            }
        }
        while let Some(&(due, call_id)) = self.query_deadlines.first() {
            if due > now_ms {
                break;
            }
            self.query_deadlines.remove(&(due, call_id));
            self.query_round(call_id);
        }
        if self.next_pace.is_some_and(|t| t <= now_ms) {
            self.pace();
            self.next_pace = (self.scan != Scan::Idle || !self.push_queue.is_empty())
                .then(|| now_ms.saturating_add(millis(self.settings.pace_interval)));
        }
    }

    // ----- internals -----------------------------------------------------

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.now_ms = self.clock.local_ms(self.now);
    }

    fn call_id(&mut self) -> u64 {
        let id = self.next_call;
        self.next_call += 1;
        id
    }

    fn zombie_ms(&self, requested: Duration) -> u32 {
        let ms = millis(requested.max(self.settings.min_zombie));
        u32::try_from(ms).unwrap_or(u32::MAX)
    }

    fn is_expired(&self, atom: &Atom) -> bool {
        let e = atom.meta.expires_at_ms;
        e != 0 && self.clock.local_of_unix(e) <= self.now_ms
    }

    fn holding_for(&self, owners: &[UnitId]) -> Holding {
        if owners.contains(&self.id) {
            Holding::Owned
        } else {
            Holding::Handoff
        }
    }

    fn send(&mut self, to: UnitId, message: Message) {
        self.counters.sent.add(message.kind());
        self.transmits.push_back(Transmit { to, message });
    }

    fn send_delete(&mut self, to: UnitId, key: &[u8], zombie_ms: u32) {
        let call_id = self.call_id();
        self.send(
            to,
            DeleteAtom {
                call_id,
                key: key.to_vec(),
                zombie_ms,
            }
            .into(),
        );
    }

    /// Stores a state written here (add, delete) as a held copy and pushes
    /// it to every other owner at once. Returns the owners.
    fn write_local(&mut self, atom: Atom) -> Vec<UnitId> {
        let key = atom.key.clone();
        let owners = self.owners(&key);
        let mut slot = Slot::new(atom, self.holding_for(&owners), self.id);
        slot.owners = owners.clone();
        slot.evaluated_at = self.epoch;
        self.table.insert(slot);
        let me = self.id;
        for &to in owners.iter().filter(|&&u| u != me) {
            self.push_now(&key, to);
        }
        self.settle_handoff(&key);
        owners
    }

    /// Takes a state learnt from an answer or an acknowledgement: merged
    /// into the local copy if it outranks it, else cached.
    fn absorb(&mut self, atom: &Atom) {
        if self.is_expired(atom) {
            if self
                .table
                .get(&atom.key)
                .is_some_and(|s| outranks(atom, &s.atom))
            {
                self.drop_key(&atom.key);
            }
            return;
        }
        match self.table.get(&atom.key) {
            Some(slot) if !outranks(atom, &slot.atom) => {}
            Some(_) => {
                let atom = atom.clone();
                self.table.modify(&atom.key.clone(), |s| s.atom = atom);
            }
            None => {
                let mut slot = Slot::new(atom.clone(), Holding::Cached, self.id);
                slot.cached_until =
                    Some(self.now_ms.saturating_add(millis(self.settings.cache_ttl)));
                self.table.insert(slot);
                self.evict();
            }
        }
    }

    fn evict(&mut self) {
        while self.table.stats().cached > self.settings.cache_capacity as u64 {
            let Some(key) = self.table.lru_victim() else {
                break;
            };
            self.counters.evicted += 1;
            self.table.remove(&key);
        }
    }

    /// Removes `key` and every push of it.
    fn drop_key(&mut self, key: &[u8]) {
        self.table.remove(key);
        let targets: Vec<UnitId> = self.push_targets(key);
        for to in targets {
            self.cancel_push(key, to);
        }
    }

    fn push_targets(&self, key: &[u8]) -> Vec<UnitId> {
        let k = key.to_vec();
        self.pushes
            .range((k.clone(), UnitId(0))..=(k, UnitId(u32::MAX)))
            .map(|((_, u), _)| *u)
            .collect()
    }

    /// A handed-off copy whose pushes are all done becomes a cache entry.
    fn settle_handoff(&mut self, key: &[u8]) {
        let handoff = self
            .table
            .get(key)
            .is_some_and(|s| s.holding == Holding::Handoff);
        if handoff && self.push_targets(key).is_empty() {
            // The pushes may have ended because the membership changed (a target left):
            // under the current view this unit may be an owner itself now, and then the
            // copy must stay held, or no one would ever replicate it here again.
            let owners = self.owners(key);
            if owners.contains(&self.id) {
                let epoch = self.epoch;
                self.table.modify(key, |s| {
                    s.holding = Holding::Owned;
                    s.owners = owners;
                    s.evaluated_at = epoch;
                });
                return;
            }
            let until = self.now_ms.saturating_add(millis(self.settings.cache_ttl));
            self.table.modify(key, |s| {
                s.holding = Holding::Cached;
                s.owners.clear();
                s.cached_until = Some(until);
            });
            self.evict();
        }
    }

    fn cancel_push(&mut self, key: &[u8], to: UnitId) {
        if let Some(PushState::InFlight { call_id, due, .. }) =
            self.pushes.remove(&(key.to_vec(), to))
        {
            self.inflight.remove(&call_id);
            self.retries.remove(&(due, call_id));
        }
        // A queued entry stays in `push_queue` and is skipped when drained.
    }

    fn finish_push(&mut self, key: &[u8], to: UnitId) {
        self.cancel_push(key, to);
        self.settle_handoff(key);
    }

    /// Sends the current state of `key` to `to` now (a new state replaces
    /// any push of an older one).
    fn push_now(&mut self, key: &[u8], to: UnitId) {
        self.cancel_push(key, to);
        self.send_push(key, to, 0);
    }

    /// Queues a push for the next batch, unless one is pending already.
    fn enqueue_push(&mut self, key: &[u8], to: UnitId) {
        let k = (key.to_vec(), to);
        if self.pushes.contains_key(&k) {
            return;
        }
        self.pushes
            .insert(k.clone(), PushState::Queued { attempts: 0 });
        self.push_queue.push_back(k);
        self.want_pace();
    }

    fn send_push(&mut self, key: &[u8], to: UnitId, attempts: u32) {
        let Some(atom) = self
            .table
            .get(key)
            .filter(|s| !s.is_gone(self.now_ms))
            .map(|s| s.atom.clone())
        else {
            self.pushes.remove(&(key.to_vec(), to));
            return;
        };
        let call_id = self.call_id();
        let backoff = self
            .settings
            .push_retry
            .saturating_mul(1 << attempts.min(16))
            .min(self.settings.push_retry_max);
        let due = self.now_ms.saturating_add(millis(backoff));
        self.counters.pushes_sent += 1;
        self.send(to, AddAtom { call_id, atom }.into());
        self.inflight.insert(call_id, (key.to_vec(), to));
        self.retries.insert((due, call_id));
        self.pushes.insert(
            (key.to_vec(), to),
            PushState::InFlight {
                call_id,
                attempts,
                due,
            },
        );
    }

    fn want_pace(&mut self) {
        if self.next_pace.is_none() {
            self.next_pace = Some(self.now_ms);
        }
    }

    /// One batch: re-evaluate up to `pace_scan` held atoms, then send up to
    /// `pace_pushes` queued pushes.
    fn pace(&mut self) {
        if let Scan::After(cursor) = &self.scan {
            let keys = self
                .table
                .held_after(cursor.as_deref(), self.settings.pace_scan);
            self.scan = if keys.len() < self.settings.pace_scan {
                Scan::Idle
            } else {
                Scan::After(keys.last().cloned())
            };
            for key in keys {
                self.rebalance(&key);
            }
        }
        let mut sent = 0;
        while sent < self.settings.pace_pushes {
            let Some((key, to)) = self.push_queue.pop_front() else {
                break;
            };
            let Some(PushState::Queued { attempts }) = self.pushes.get(&(key.clone(), to)).copied()
            else {
                continue; // cancelled or sent since
            };
            let still_wanted = self.members.contains_key(&to) && self.owners(&key).contains(&to);
            if still_wanted {
                self.send_push(&key, to, attempts);
                sent += 1;
            } else {
                self.counters.pushes_dropped += 1;
                self.pushes.remove(&(key.clone(), to));
                self.settle_handoff(&key);
            }
        }
    }

    /// Recomputes the owners of a held atom after a membership change and
    /// queues pushes to every owner that may lack it: owners that joined
    /// (or rejoined) since the last evaluation, and all other owners if the
    /// unit responsible for delivering this state has left.
    fn rebalance(&mut self, key: &[u8]) {
        let Some(slot) = self.table.get(key) else {
            return;
        };
        if slot.holding == Holding::Cached {
            return;
        }
        let owners = self.owners(key);
        let orphaned = slot.source != self.id && !self.members.contains_key(&slot.source);
        let had = |u: &UnitId| {
            slot.owners.contains(u) && self.members.get(u).is_some_and(|&j| j <= slot.evaluated_at)
        };
        let targets: Vec<UnitId> = owners
            .iter()
            .copied()
            .filter(|u| *u != self.id && (orphaned || !had(u)))
            .collect();
        let holding = self.holding_for(&owners);
        let (epoch, id) = (self.epoch, self.id);
        self.table.modify(key, |s| {
            s.owners = owners;
            s.evaluated_at = epoch;
            s.holding = holding;
            if orphaned {
                s.source = id;
            }
        });
        for to in targets {
            self.enqueue_push(key, to);
        }
        self.settle_handoff(key);
    }

    /// Sends the next round of a query, or moves it on when its rounds in
    /// this stage are used up.
    fn query_round(&mut self, call_id: u64) {
        let Some(q) = self.queries.get_mut(&call_id) else {
            return;
        };
        self.query_deadlines.remove(&(q.due, call_id));
        if q.awaiting.is_empty() || q.rounds >= self.settings.query_attempts {
            self.next_stage(call_id);
            return;
        }
        q.rounds += 1;
        q.due = self
            .now_ms
            .saturating_add(millis(self.settings.query_timeout));
        self.query_deadlines.insert((q.due, call_id));
        let key = q.key.clone();
        let targets: Vec<UnitId> = q.awaiting.iter().copied().collect();
        for to in targets {
            self.send(
                to,
                QueryAtom {
                    call_id,
                    key: key.clone(),
                }
                .into(),
            );
        }
    }

    /// Owners exhausted: ask every other live unit once more; then give up.
    fn next_stage(&mut self, call_id: u64) {
        let Some(q) = self.queries.get_mut(&call_id) else {
            return;
        };
        if q.broadcast {
            self.resolve(call_id, None);
            return;
        }
        q.broadcast = true;
        q.rounds = 0;
        q.awaiting = self
            .member_list
            .iter()
            .copied()
            .filter(|u| *u != self.id && !q.tried.contains(u))
            .collect();
        q.tried.extend(q.awaiting.iter().copied());
        if q.awaiting.is_empty() {
            self.resolve(call_id, None);
        } else {
            self.query_round(call_id);
        }
    }

    fn resolve(&mut self, call_id: u64, found: Option<Atom>) {
        let Some(q) = self.queries.remove(&call_id) else {
            return;
        };
        self.query_deadlines.remove(&(q.due, call_id));
        self.query_by_key.remove(&q.key);
        if let Some(atom) = &found {
            self.absorb(atom);
        }
        // The local copy is the merge of everything seen (it may also have
        // arrived by a push meanwhile).
        let answer = self
            .table
            .get(&q.key)
            .filter(|s| !s.is_gone(self.now_ms))
            .map(|s| s.atom.clone())
            .or(found);
        for query in q.waiters {
            if answer.is_some() {
                self.counters.remote_found += 1;
            } else {
                self.counters.misses += 1;
            }
            self.events.push_back(DamEvent::QueryAnswered {
                query,
                key: q.key.clone(),
                atom: answer.clone(),
            });
        }
    }

    /// Whether the internal indexes agree (for tests and debugging).
    pub fn is_consistent(&self) -> bool {
        if !self.table.is_consistent() {
            return false;
        }
        for ((key, to), state) in &self.pushes {
            if self.table.get(key).is_none() {
                return false;
            }
            match state {
                PushState::Queued { .. } => {
                    if !self.push_queue.iter().any(|(k, u)| k == key && u == to) {
                        return false;
                    }
                }
                PushState::InFlight { call_id, due, .. } => {
                    if self.inflight.get(call_id) != Some(&(key.clone(), *to))
                        || !self.retries.contains(&(*due, *call_id))
                    {
                        return false;
                    }
                }
            }
        }
        let inflight_ok = self.inflight.len() == self.retries.len()
            && self.inflight.iter().all(|(call_id, k)| {
                matches!(self.pushes.get(k), Some(PushState::InFlight { call_id: c, .. }) if c == call_id)
            });
        let queries_ok = self.queries.len() == self.query_by_key.len()
            && self.queries.len() == self.query_deadlines.len()
            && self.queries.iter().all(|(call_id, q)| {
                self.query_by_key.get(&q.key) == Some(call_id)
                    && self.query_deadlines.contains(&(q.due, *call_id))
            });
        inflight_ok && queries_ok
    }
}

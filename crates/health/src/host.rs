//! The host side of the health and load protocol (FIG. 15): one
//! [`HostProtocol`] per host identity (a proxy agent may run several, FIG.
//! 17A). Owns the host's *actual* table (what local checks and the local API
//! say), the *published* table (what units were told), heartbeats, row
//! changes, snapshots and the postulate handshake (see [`crate::handshake`]
//! for the handshake rules). Sans-I/O: the agent daemon feeds it local
//! changes and messages with the current time and sends what
//! [`HostProtocol::poll_transmit`] returns.
//!
//! Publication rules:
//! - Adding or removing a row, and changes of health, capacity, target or
//!   current state, are published immediately: all pending changes are
//!   coalesced into one `RowChange` (generation + 1) on the next
//!   [`HostProtocol::poll_transmit`] — or, when they do not fit one
//!   datagram, into several with consecutive generations (see
//!   [`crate::datagram`]).
//! - A unit that objects to a postulate missed a change: it is sent a
//!   snapshot (a complete copy), at most once per postulate interval.
//! - Snapshot parts and postulate rounds are split to fit a datagram too.
//! - Load-only changes are published at most once per `load_interval`, but
//!   ride along with any immediate change of the same row.
//! - Heartbeats carry the digest of the *published* table, so a pending load
//!   change never makes a unit's cache look stale.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use switchyard_wire::health::{
    AppStatus, Directive, DirectiveState, Goodbye, Heartbeat, Row, RowChange, RowOp,
    SendTableSnapshot,
};
use switchyard_wire::{AppId, HostId, Message, UnitId};

use crate::Transmit;
use crate::counters::HostCounters;
use crate::datagram;
use crate::error::{HealthError, Ignored};
use crate::handshake::{HandshakeView, Handshakes};
use crate::load::LoadSmoother;
use crate::settings::HostSettings;
use crate::table::{AppKey, Table};

/// How many times [`HostProtocol::goodbye`] sends the goodbye to each unit.
pub const GOODBYE_REPEAT: usize = 3;

/// One row as the local API and `ctl` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowView<'a> {
    /// The actual row (status and directive as the host knows them).
    pub row: &'a Row,
    /// The row as last published to the units (`None`: not published yet).
    pub published: Option<&'a Row>,
    /// Progress of the directive handshake, if one is pending.
    pub handshake: Option<HandshakeView>,
}

/// The host-side state machine. See the [module docs](self).
#[derive(Debug)]
pub struct HostProtocol {
    settings: HostSettings,
    now: Instant,
    actual: BTreeMap<AppKey, Row>,
    published: Table,
    /// Rows whose difference from the published table must go out now.
    dirty: BTreeSet<AppKey>,
    /// Rows whose load may differ from the published table.
    load_dirty: BTreeSet<AppKey>,
    last_load_flush: Option<Instant>,
    smoothers: BTreeMap<AppKey, LoadSmoother>,
    handshakes: Handshakes,
    /// The generation and time of the last snapshot sent to each unit.
    last_snapshot_to: BTreeMap<UnitId, (u64, Instant)>,
    next_heartbeat: Option<Instant>,
    heartbeats_sent: u64,
    queue: VecDeque<Transmit<UnitId>>,
    counters: HostCounters,
    closed: bool,
}

impl HostProtocol {
    /// A host with an empty table at `settings.initial_generation`. The
    /// first heartbeat is due at `now`.
    pub fn new(settings: HostSettings, now: Instant) -> Result<Self, HealthError> {
        settings.validate()?;
        Ok(Self {
            published: Table::new(settings.initial_generation),
            settings,
            now,
            actual: BTreeMap::new(),
            dirty: BTreeSet::new(),
            load_dirty: BTreeSet::new(),
            last_load_flush: None,
            smoothers: BTreeMap::new(),
            handshakes: Handshakes::default(),
            last_snapshot_to: BTreeMap::new(),
            next_heartbeat: Some(now),
            heartbeats_sent: 0,
            queue: VecDeque::new(),
            counters: HostCounters::default(),
            closed: false,
        })
    }

    /// The host id.
    pub fn host(&self) -> HostId {
        self.settings.host
    }

    /// The settings.
    pub fn settings(&self) -> &HostSettings {
        &self.settings
    }

    /// Counters.
    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// The table as last published to the units (generation and rows).
    pub fn published(&self) -> &Table {
        &self.published
    }

    /// The actual row of `app`.
    pub fn row(&self, app: &AppId) -> Option<RowView<'_>> {
        let key = AppKey::new(app).ok()?;
        let row = self.actual.get(&key)?;
        Some(self.view(&key, row))
    }

    /// Every actual row, in canonical order.
    pub fn rows(&self) -> Vec<RowView<'_>> {
        self.actual.iter().map(|(k, r)| self.view(k, r)).collect()
    }

    /// Every pending handshake.
    pub fn handshakes(&self) -> Vec<HandshakeView> {
        self.handshakes
            .keys()
            .filter_map(|k| self.handshakes.view(k, &self.settings.units))
            .collect()
    }

    /// Whether local changes wait for publication (immediately on the next
    /// [`Self::poll_transmit`], or for the load interval).
    pub fn has_unpublished_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.load_dirty.is_empty()
    }

    /// Whether [`Self::goodbye`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn view<'a>(&'a self, key: &AppKey, row: &'a Row) -> RowView<'a> {
        RowView {
            row,
            published: self.published.get_by_key(key),
            handshake: self.handshakes.view(key, &self.settings.units),
        }
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Adds a row for `app` (directive active/active) or updates its status.
    pub fn set_app(
        &mut self,
        now: Instant,
        app: AppId,
        status: AppStatus,
    ) -> Result<(), HealthError> {
        self.advance(now);
        let key = AppKey::new(&app).map_err(HealthError::InvalidApp)?;
        match self.actual.get_mut(&key) {
            None => {
                self.actual.insert(
                    key.clone(),
                    Row {
                        app,
                        status,
                        directive: Directive {
                            target: DirectiveState::Active,
                            current: DirectiveState::Active,
                        },
                    },
                );
                self.dirty.insert(key);
            }
            Some(row) => {
                let old = row.status;
                row.status = status;
                if old.health() != status.health() || old.capacity() != status.capacity() {
                    self.dirty.insert(key);
                } else if old.load() != status.load() {
                    self.load_dirty.insert(key);
                }
            }
        }
        Ok(())
    }

    /// Feeds a raw load sample for `app` through its [`LoadSmoother`] and
    /// updates the row's load when the smoothed value is published. Returns
    /// the new load, if it changed.
    pub fn report_load(
        &mut self,
        now: Instant,
        app: &AppId,
        raw: u8,
    ) -> Result<Option<u8>, HealthError> {
        self.advance(now);
        let key = self.key_of(app)?;
        let settings = self.settings.smoothing;
        let smoother = self
            .smoothers
            .entry(key.clone())
            .or_insert_with(|| LoadSmoother::new(settings));
        let Some(load) = smoother.sample(raw) else {
            return Ok(None);
        };
        let Some(row) = self.actual.get_mut(&key) else {
            return Err(HealthError::UnknownApp(Box::new(app.clone())));
        };
        // `load` is at most 100 (the smoother clamps) and the other fields
        // come from a valid status, so this cannot fail; keep the old
        // status if it ever did.
        if let Ok(status) = AppStatus::new(row.status.health(), load, row.status.capacity())
            && status != row.status
        {
            row.status = status;
            self.load_dirty.insert(key);
            return Ok(Some(load));
        }
        Ok(None)
    }

    /// Removes the row of `app`.
    pub fn remove_app(&mut self, now: Instant, app: &AppId) -> Result<(), HealthError> {
        self.advance(now);
        let key = self.key_of(app)?;
        self.actual.remove(&key);
        self.smoothers.remove(&key);
        self.load_dirty.remove(&key);
        self.dirty.insert(key);
        Ok(())
    }

    /// Sets the target directive state of `app` (drain, undrain, disable).
    /// The change is published at once; *current* follows after the
    /// handshake.
    pub fn set_target(
        &mut self,
        now: Instant,
        app: &AppId,
        target: DirectiveState,
    ) -> Result<(), HealthError> {
        self.advance(now);
        let key = self.key_of(app)?;
        if let Some(row) = self.actual.get_mut(&key)
            && row.directive.target != target
        {
            row.directive.target = target;
            self.dirty.insert(key);
        }
        Ok(())
    }

    fn key_of(&self, app: &AppId) -> Result<AppKey, HealthError> {
        let key = AppKey::new(app).map_err(HealthError::InvalidApp)?;
        if self.actual.contains_key(&key) {
            Ok(key)
        } else {
            Err(HealthError::UnknownApp(Box::new(app.clone())))
        }
    }

    /// Clean shutdown: queues a goodbye to every unit (units clear this
    /// host at once) and stops heartbeats and handshakes. Drain
    /// [`Self::poll_transmit`] afterwards.
    ///
    /// Each unit gets the goodbye [`GOODBYE_REPEAT`] times: goodbye is the
    /// last word, nothing resends it, and one lost datagram would otherwise
    /// leave the host in that unit's cache until it ages out. Units treat
    /// the copies as one (a goodbye is idempotent).
    pub fn goodbye(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.queue.clear();
        let host = self.settings.host;
        for _ in 0..GOODBYE_REPEAT {
            self.broadcast(&Message::from(Goodbye { host }));
        }
    }

    /// Handles a message from unit `from`.
    pub fn handle(&mut self, now: Instant, from: UnitId, message: &Message) -> Result<(), Ignored> {
        self.advance(now);
        self.counters.received.add(message.kind());
        let result = self.dispatch(from, message);
        if result.is_err() {
            self.counters.ignored += 1;
        }
        result
    }

    fn dispatch(&mut self, from: UnitId, message: &Message) -> Result<(), Ignored> {
        let now = self.now;
        match message {
            Message::GetTableSnapshot(get) => {
                if get.requester != from {
                    return Err(Ignored::UnitMismatch {
                        from,
                        claimed: get.requester,
                    });
                }
                self.handshakes.heard(from, now);
                // After a goodbye the table is no longer authoritative.
                if !self.closed {
                    self.serve_snapshot(from);
                }
                Ok(())
            }
            Message::PostulateWrong(answer) => {
                let host = self.settings.host;
                if answer.host != host {
                    return Err(Ignored::OtherHost {
                        expected: host,
                        got: answer.host,
                    });
                }
                if answer.unit != from {
                    return Err(Ignored::UnitMismatch {
                        from,
                        claimed: answer.unit,
                    });
                }
                if !self.settings.units.contains(&from) {
                    return Err(Ignored::UnknownUnit(from));
                }
                if self.closed {
                    return Ok(());
                }
                let answered = self
                    .handshakes
                    .answer(from, answer.round, &answer.wrong, now);
                let objections = answered.objections;
                if !objections.is_empty() {
                    // The unit missed a change. Resending only the objected
                    // rows stamped with the current generation would let a
                    // unit one generation behind take them for the whole
                    // change and believe it holds a complete copy; a
                    // snapshot is always a complete copy. Not again while a
                    // snapshot of this generation to this unit is at most a
                    // postulate interval old (a round may be several
                    // messages, each answered).
                    self.counters.rows_resent += objections.len() as u64;
                    let generation = self.published.generation();
                    let recent = self.last_snapshot_to.get(&from).is_some_and(|(g, t)| {
                        *g == generation
                            && now.saturating_duration_since(*t) < self.settings.postulate_interval
                    });
                    if !recent {
                        self.serve_snapshot(from);
                    }
                }
                // Only the rows the answer is about can complete now; the
                // rest are evaluated on the next round.
                self.evaluate(now, Some(&answered.carried));
                Ok(())
            }
            other => Err(Ignored::NotForThisMachine(other.kind())),
        }
    }

    /// The next message to send, if any. Publishes pending changes first.
    pub fn poll_transmit(&mut self) -> Option<Transmit<UnitId>> {
        if !self.closed {
            self.flush(self.now);
        }
        self.queue.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let load = if self.load_dirty.is_empty() {
            None
        } else {
            Some(self.load_ready_at())
        };
        [self.next_heartbeat, self.handshakes.next_round_at(), load]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs timers due at `now`: heartbeats, postulate rounds, give-ups and
    /// rate-limited load updates.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.closed {
            return;
        }
        let now = self.now;
        self.flush(now);
        if self.handshakes.due(now) {
            self.evaluate(now, None);
            let host = self.settings.host;
            let round = self.handshakes.next_round(
                host,
                now,
                self.settings.postulate_interval,
                self.settings.max_datagram_payload,
            );
            if !round.is_empty() {
                self.counters.postulate_rounds += 1;
            }
            for message in round {
                self.broadcast(&Message::from(message));
            }
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            self.heartbeat(now);
        }
    }

    fn load_ready_at(&self) -> Instant {
        self.last_load_flush
            .and_then(|t| t.checked_add(self.settings.load_interval))
            .unwrap_or(self.now)
    }

    fn heartbeat(&mut self, now: Instant) {
        let send_name = self.settings.name_every > 0
            && self
                .heartbeats_sent
                .is_multiple_of(u64::from(self.settings.name_every));
        self.heartbeats_sent += 1;
        let hb = Heartbeat {
            host: self.settings.host,
            check: self.published.check(),
            name: if send_name {
                self.settings.name.clone()
            } else {
                None
            },
            address: self.settings.address,
            forward: false,
        };
        self.broadcast(&Message::from(hb));
        let interval = self.settings.heartbeat_interval;
        // Keep the cadence, but never queue a burst after a long pause.
        let next = self
            .next_heartbeat
            .and_then(|t| t.checked_add(interval))
            .filter(|t| *t > now)
            .or_else(|| now.checked_add(interval));
        self.next_heartbeat = next;
    }

    fn evaluate(&mut self, now: Instant, rows: Option<&[AppKey]>) {
        let (units, give_up) = (&self.settings.units, self.settings.unit_give_up_after);
        let e = match rows {
            None => self.handshakes.evaluate(units, now, give_up),
            Some(keys) => self.handshakes.evaluate_rows(keys, units, now, give_up),
        };
        self.counters.units_given_up += e.newly_given_up;
        self.counters.handshakes_blocked += e.newly_blocked;
        if e.newly_blocked > 0 {
            tracing::warn!(host = %self.settings.host, "directive handshake blocked: no unit reachable");
        }
        for (key, state) in e.completed {
            self.counters.handshakes_completed += 1;
            if let Some(row) = self.actual.get_mut(&key)
                && row.directive.current != state
            {
                row.directive.current = state;
                self.dirty.insert(key);
            }
            tracing::debug!(host = %self.settings.host, ?state, "directive handshake completed");
        }
    }

    /// Publishes pending changes as one row change.
    fn flush(&mut self, now: Instant) {
        let load_due = !self.load_dirty.is_empty() && now >= self.load_ready_at();
        if self.dirty.is_empty() && !load_due {
            return;
        }
        let mut keys = std::mem::take(&mut self.dirty);
        let mut load_published = false;
        if load_due {
            for key in std::mem::take(&mut self.load_dirty) {
                if !keys.contains(&key) {
                    let changed = match (self.actual.get(&key), self.published.get_by_key(&key)) {
                        (Some(a), Some(p)) => a != p,
                        _ => false,
                    };
                    load_published |= changed;
                    keys.insert(key);
                }
            }
        } else {
            // Immediate changes carry the row's load along.
            self.load_dirty.retain(|k| !keys.contains(k));
        }
        if load_published {
            self.last_load_flush = Some(now);
        }
        let mut ops = Vec::new();
        for key in keys {
            let op = match (self.actual.get(&key), self.published.get_by_key(&key)) {
                (Some(a), None) => RowOp::Add(a.clone()),
                (None, Some(p)) => RowOp::Delete(p.app.clone()),
                (Some(a), Some(p)) if a != p => RowOp::Update(a.clone()),
                _ => continue,
            };
            self.publish_op(key, &op, now);
            ops.push(op);
        }
        // One row change per datagram-sized chunk, each its own generation
        // step, so units apply the chunks in order and detect a lost one.
        let chunks = datagram::chunk_by_size(
            ops,
            datagram::row_change_base(),
            self.settings.max_datagram_payload,
            datagram::op_len,
        );
        for ops in chunks {
            let generation = self.published.generation().wrapping_add(1);
            self.published.set_generation(generation);
            self.counters.row_changes_published += 1;
            let change = Message::from(RowChange {
                host: self.settings.host,
                generation,
                ops,
            });
            self.broadcast(&change);
        }
    }

    /// Applies one op to the published table and starts, restarts or
    /// cancels the row's handshake.
    fn publish_op(&mut self, key: AppKey, op: &RowOp, now: Instant) {
        match op {
            RowOp::Add(row) | RowOp::Update(row) => {
                let previous = self.published.insert(key.clone(), row.clone());
                let d = row.directive;
                if d.target == d.current {
                    self.handshakes.cancel(&key);
                } else {
                    let target_changed = previous.is_none_or(|p| p.directive.target != d.target);
                    if target_changed || self.handshakes.target(&key) != Some(d.target) {
                        self.handshakes.start(
                            key,
                            row.app.clone(),
                            d.target,
                            now,
                            self.settings.postulate_delay,
                        );
                    }
                }
            }
            RowOp::Delete(_) => {
                self.published.remove(&key);
                self.handshakes.cancel(&key);
            }
        }
    }

    /// Sends the published table to `to`, in parts that each fit a
    /// datagram (see [`crate::datagram`]).
    fn serve_snapshot(&mut self, to: UnitId) {
        let sized: Vec<(&Row, usize)> = self
            .published
            .rows()
            .map(|row| (row, datagram::row_len(row)))
            .collect();
        let base = datagram::snapshot_base();
        let mut target = self.settings.max_datagram_payload;
        let mut chunks = datagram::chunk_by_size(sized.clone(), base, target, |(_, n)| *n);
        // A part number is a u16. Only a table of tens of megabytes needs
        // more parts at the target size; then parts grow past it instead.
        while chunks.len() > usize::from(u16::MAX) {
            target = target.saturating_mul(2);
            chunks = datagram::chunk_by_size(sized.clone(), base, target, |(_, n)| *n);
        }
        if chunks.is_empty() {
            chunks.push(Vec::new()); // an empty table is one empty part
        }
        let parts = u16::try_from(chunks.len()).unwrap_or(u16::MAX);
        let messages: Vec<Message> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                Message::from(SendTableSnapshot {
                    host: self.settings.host,
                    generation: self.published.generation(),
                    part: u16::try_from(i).unwrap_or(u16::MAX),
                    parts,
                    rows: chunk.into_iter().map(|(r, _)| r.clone()).collect(),
                })
            })
            .collect();
        self.counters.snapshots_served += 1;
        self.last_snapshot_to
            .insert(to, (self.published.generation(), self.now));
        for m in messages {
            self.send(to, m);
        }
    }

    fn broadcast(&mut self, message: &Message) {
        for i in 0..self.settings.units.len() {
            let to = self.settings.units[i];
            self.send(to, message.clone());
        }
    }

    fn send(&mut self, to: UnitId, message: Message) {
        self.counters.sent.add(message.kind());
        self.queue.push_back(Transmit { to, message });
    }
}

//! [`SessionChannel`]: one host's session table (authoritative, spec FIG. 20) and its
//! reliable channel to the session-store unit it is bound to. Sans-I/O: every input carries
//! `now`; messages come out of [`SessionChannel::poll_transmit`], the next deadline out of
//! [`SessionChannel::poll_timeout`].
//!
//! Rules (the wire side is described in `switchyard_wire::session`):
//! - **Binding**: the units are ranked by rendezvous hashing of the host id
//!   ([`binding_order`]); the host binds to the first one. When the bound unit has answered
//!   nothing for `rebind_after` (it always has something to answer: resends every
//!   `resend_interval`, keepalives every `keepalive_interval` when idle), the host gives up
//!   on it for `10 × rebind_after` and binds to the next unit in its ranking not given up
//!   on (all given up: the one given up on longest ago). It stays there until that unit
//!   fails too or the agent restarts.
//! - **Channels**: every binding (the first, a rebind, a resync a unit asks for) starts a
//!   channel: a `SessionResync` marker then one `SessionUp` per session of the table, then
//!   the ups and downs that follow, all with consecutive message ids (monotonic for the
//!   process, so a late acknowledgement of an old channel can never acknowledge a new one).
//! - **Reliability**: at most `window` messages are unacknowledged; acknowledgements are
//!   cumulative; a message unacknowledged for `resend_interval` is resent (go-back-N from
//!   the oldest).
//! - **Resync requests**: a unit that does not know the channel (it restarted) asks for a
//!   resync; the host starts a new channel unless the current one's marker is still
//!   unacknowledged (it will get there) or the unit names the current channel.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use switchyard_wire::session::{
    SessionDown, SessionKeepalive, SessionResync, SessionResyncRequest, SessionUp,
};
use switchyard_wire::{AppId, HostId, Message, SessionId, UnitId};

/// Seed of the binding hash ("SWYDBIND").
pub const BINDING_SEED: u64 = 0x5357_5944_4249_4e44;

/// Most sessions one host's table holds; more are refused (the API answers 409).
pub const MAX_SESSIONS_PER_HOST: usize = 1_000_000;

/// The order in which `host` tries `units`: descending
/// `xxh3_64_with_seed(u32_be(host) ‖ u32_be(unit), BINDING_SEED)`, ties by ascending unit
/// id. Every agent and every test computes the same order.
pub fn binding_order(host: HostId, units: &[UnitId]) -> Vec<UnitId> {
    let mut scored: Vec<(u64, UnitId)> = units
        .iter()
        .map(|&u| {
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&host.0.to_be_bytes());
            buf[4..].copy_from_slice(&u.0.to_be_bytes());
            (xxhash_rust::xxh3::xxh3_64_with_seed(&buf, BINDING_SEED), u)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().map(|(_, u)| u).collect()
}

/// Settings of one host's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSettings {
    /// The host.
    pub host: HostId,
    /// The units with the session-store role (any order).
    pub units: Vec<UnitId>,
    /// Resend unacknowledged messages after this.
    pub resend_interval: Duration,
    /// Keepalive period while nothing is unacknowledged.
    pub keepalive_interval: Duration,
    /// Silence of the bound unit after which the host rebinds.
    pub rebind_after: Duration,
    /// Most unacknowledged messages.
    pub window: usize,
    /// First channel number; agents pass their start time in nanoseconds so a restarted
    /// agent's channels differ from its previous run's.
    pub first_channel: u64,
}

impl ChannelSettings {
    /// Settings with a window of 256 messages.
    pub fn new(host: HostId, units: Vec<UnitId>, first_channel: u64) -> Self {
        Self {
            host,
            units,
            resend_interval: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(1),
            rebind_after: Duration::from_secs(3),
            window: 256,
            first_channel,
        }
    }
}

/// One session of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The session.
    pub session: SessionId,
    /// Its application, if reported.
    pub app: Option<(String, AppId)>,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// A session down for a session the table does not have.
    #[error("no such session on this host")]
    Unknown,
    /// The table is full.
    #[error("the host's session table is full ({MAX_SESSIONS_PER_HOST} sessions)")]
    Full,
}

/// Counters of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Session ups accepted.
    pub ups: u64,
    /// Session downs accepted.
    pub downs: u64,
    /// Messages sent (first transmissions).
    pub sent: u64,
    /// Messages resent.
    pub resent: u64,
    /// Keepalives sent.
    pub keepalives: u64,
    /// Acknowledgements taken.
    pub acks: u64,
    /// Channels started (resyncs).
    pub resyncs: u64,
    /// Resync requests acted on.
    pub resync_requests: u64,
    /// Rebinds to another unit.
    pub rebinds: u64,
    /// Messages ignored (not from the bound unit, stale, not for a host).
    pub ignored: u64,
}

#[derive(Debug, Clone)]
struct Outstanding {
    id: u64,
    message: Message,
    sent_at: Option<Instant>,
}

/// One host's session table and channel. See the [module docs](self).
#[derive(Debug)]
pub struct SessionChannel {
    settings: ChannelSettings,
    ranking: Vec<UnitId>,
    table: BTreeMap<Vec<u8>, TableEntry>,
    bound: Option<UnitId>,
    given_up: BTreeMap<UnitId, Instant>,
    channel: u64,
    next_channel: u64,
    next_id: u64,
    resync_id: u64,
    resync_acked: bool,
    queue: VecDeque<Outstanding>,
    last_heard: Instant,
    next_keepalive: Instant,
    transmits: VecDeque<(UnitId, Message)>,
    counters: ChannelCounters,
}

impl SessionChannel {
    /// A host with an empty table, bound to the first unit of its ranking (none without
    /// units: reports are then only kept in the table).
    pub fn new(settings: ChannelSettings, now: Instant) -> Self {
        let ranking = binding_order(settings.host, &settings.units);
        let mut channel = Self {
            bound: ranking.first().copied(),
            ranking,
            table: BTreeMap::new(),
            given_up: BTreeMap::new(),
            channel: 0,
            next_channel: settings.first_channel.max(1),
            next_id: 1,
            resync_id: 0,
            resync_acked: false,
            queue: VecDeque::new(),
            last_heard: now,
            next_keepalive: now,
            transmits: VecDeque::new(),
            counters: ChannelCounters::default(),
            settings,
        };
        channel.start_channel(now);
        channel
    }

    /// The host.
    pub fn host(&self) -> HostId {
        self.settings.host
    }

    /// The unit the host is bound to.
    pub fn bound(&self) -> Option<UnitId> {
        self.bound
    }

    /// The current channel number.
    pub fn channel(&self) -> u64 {
        self.channel
    }

    /// Messages not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.queue.len()
    }

    /// Whether the bound unit acknowledged the current channel's resync marker.
    pub fn in_sync(&self) -> bool {
        self.resync_acked
    }

    /// When the bound unit was last heard from.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The table, in key order.
    pub fn sessions(&self) -> impl Iterator<Item = (&Vec<u8>, &TableEntry)> {
        self.table.iter()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The counters.
    pub fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    /// Session up (spec: session establishment notification). Returns whether the table
    /// changed (a repeated up with the same application changes nothing and sends nothing).
    pub fn up(
        &mut self,
        now: Instant,
        session: SessionId,
        app: Option<(String, AppId)>,
    ) -> Result<bool, ReportError> {
        let key = session.key();
        let entry = TableEntry {
            session: session.clone(),
            app: app.clone(),
        };
        match self.table.get(&key) {
            Some(existing) if *existing == entry => return Ok(false),
            None if self.table.len() >= MAX_SESSIONS_PER_HOST => return Err(ReportError::Full),
            _ => {}
        }
        self.table.insert(key, entry);
        self.counters.ups += 1;
        let id = self.take_id();
        self.push(
            now,
            id,
            SessionUp {
                message_id: id,
                session,
                host: self.settings.host,
                app: app.map(|(_, a)| a),
                metadata: Vec::new(),
            }
            .into(),
        );
        Ok(true)
    }

    /// Session down (spec: session termination notification).
    pub fn down(&mut self, now: Instant, session: &SessionId) -> Result<TableEntry, ReportError> {
        let entry = self
            .table
            .remove(&session.key())
            .ok_or(ReportError::Unknown)?;
        self.counters.downs += 1;
        let id = self.take_id();
        self.push(
            now,
            id,
            SessionDown {
                message_id: id,
                session: session.clone(),
                host: self.settings.host,
            }
            .into(),
        );
        Ok(entry)
    }

    /// An authenticated message from unit `from`.
    pub fn handle(&mut self, now: Instant, from: UnitId, message: &Message) {
        if Some(from) != self.bound {
            self.counters.ignored += 1;
            return;
        }
        match message {
            Message::SessionAck(ack) => {
                self.last_heard = now;
                if ack.up_to < self.resync_id {
                    // An acknowledgement of an earlier channel: alive, nothing more.
                    self.counters.ignored += 1;
                    return;
                }
                self.counters.acks += 1;
                self.resync_acked = true;
                while self.queue.front().is_some_and(|o| o.id <= ack.up_to) {
                    self.queue.pop_front();
                }
                self.flush(now);
            }
            Message::SessionResyncRequest(SessionResyncRequest { known_channel }) => {
                self.last_heard = now;
                if *known_channel == self.channel || !self.resync_acked {
                    self.counters.ignored += 1;
                    return;
                }
                self.counters.resync_requests += 1;
                tracing::info!(host = %self.settings.host, unit = %from, "the bound unit lost this host's sessions (restarted?): resyncing");
                self.start_channel(now);
            }
            _ => self.counters.ignored += 1,
        }
    }

    /// When [`Self::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bound?;
        let resend = self
            .queue
            .front()
            .and_then(|o| o.sent_at)
            .map(|at| at + self.settings.resend_interval);
        let keepalive = self.queue.is_empty().then_some(self.next_keepalive);
        let rebind = self.last_heard + self.settings.rebind_after;
        [resend, keepalive, Some(rebind)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Rebinds, resends and sends keepalives as due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(bound) = self.bound else {
            return;
        };
        if now.saturating_duration_since(self.last_heard) >= self.settings.rebind_after {
            self.rebind(now, bound);
            return;
        }
        if let Some(first) = self.queue.front().and_then(|o| o.sent_at)
            && now.saturating_duration_since(first) >= self.settings.resend_interval
        {
            // Go-back-N: everything sent is resent, oldest first.
            for o in self.queue.iter_mut().take(self.settings.window) {
                if o.sent_at.is_some() {
                    o.sent_at = Some(now);
                    self.counters.resent += 1;
                    self.transmits.push_back((bound, o.message.clone()));
                }
            }
        }
        self.flush(now);
        if self.queue.is_empty() && now >= self.next_keepalive {
            self.counters.keepalives += 1;
            self.transmits.push_back((
                bound,
                SessionKeepalive {
                    channel: self.channel,
                    host: self.settings.host,
                    next_id: self.next_id,
                }
                .into(),
            ));
            self.next_keepalive = now + self.settings.keepalive_interval;
        }
    }

    /// The next message and the unit it goes to.
    pub fn poll_transmit(&mut self) -> Option<(UnitId, Message)> {
        self.transmits.pop_front()
    }

    fn rebind(&mut self, now: Instant, from: UnitId) {
        self.given_up
            .insert(from, now + self.settings.rebind_after * 10);
        self.given_up.retain(|_, until| *until > now);
        let next = self
            .ranking
            .iter()
            .copied()
            .find(|u| !self.given_up.contains_key(u))
            .or_else(|| {
                // Every unit was given up on: the one given up on longest ago.
                self.given_up
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(u, _)| *u)
            });
        self.counters.rebinds += 1;
        tracing::warn!(host = %self.settings.host, unit = %from, next = ?next.map(|u| u.0), silent_for = ?now.saturating_duration_since(self.last_heard), "the bound session-store unit stopped answering: rebinding");
        self.bound = next;
        self.start_channel(now);
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn start_channel(&mut self, now: Instant) {
        self.channel = self.next_channel;
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        self.queue.clear();
        self.resync_acked = false;
        self.last_heard = now;
        self.counters.resyncs += 1;
        let id = self.take_id();
        self.resync_id = id;
        let marker = SessionResync {
            channel: self.channel,
            message_id: id,
            host: self.settings.host,
            sessions: self.table.len() as u64,
        };
        self.queue.push_back(Outstanding {
            id,
            message: marker.into(),
            sent_at: None,
        });
        let ups: Vec<(SessionId, Option<AppId>)> = self
            .table
            .values()
            .map(|e| (e.session.clone(), e.app.as_ref().map(|(_, a)| a.clone())))
            .collect();
        for (session, app) in ups {
            let id = self.take_id();
            self.queue.push_back(Outstanding {
                id,
                message: SessionUp {
                    message_id: id,
                    session,
                    host: self.settings.host,
                    app,
                    metadata: Vec::new(),
                }
                .into(),
                sent_at: None,
            });
        }
        self.flush(now);
    }

    fn push(&mut self, now: Instant, id: u64, message: Message) {
        self.queue.push_back(Outstanding {
            id,
            message,
            sent_at: None,
        });
        self.flush(now);
    }

    /// Sends unsent messages within the window.
    fn flush(&mut self, now: Instant) {
        let Some(bound) = self.bound else {
            return;
        };
        let mut sent = false;
        for o in self.queue.iter_mut().take(self.settings.window) {
            if o.sent_at.is_none() {
                o.sent_at = Some(now);
                self.counters.sent += 1;
                self.transmits.push_back((bound, o.message.clone()));
                sent = true;
            }
        }
        if sent {
            self.next_keepalive = now + self.settings.keepalive_interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use switchyard_wire::session::SessionAck;

    use super::*;

    const HOST: HostId = HostId(101);

    fn ip(last: u8) -> SessionId {
        SessionId::ClientIp(IpAddr::from([198, 51, 100, last]))
    }

    fn settings(units: &[u32]) -> ChannelSettings {
        let mut s = ChannelSettings::new(HOST, units.iter().map(|&u| UnitId(u)).collect(), 7);
        s.window = 4;
        s
    }

    fn drain(c: &mut SessionChannel) -> Vec<(UnitId, Message)> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    fn ids(sent: &[(UnitId, Message)]) -> Vec<u64> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Message::SessionResync(r) => Some(r.message_id),
                Message::SessionUp(u) => Some(u.message_id),
                Message::SessionDown(d) => Some(d.message_id),
                _ => None,
            })
            .collect()
    }

    fn ack(up_to: u64) -> Message {
        SessionAck { up_to }.into()
    }

    #[test]
    fn binding_order_is_deterministic_and_a_permutation() {
        let units = [UnitId(1), UnitId(2), UnitId(3)];
        let order = binding_order(HOST, &units);
        assert_eq!(
            order,
            binding_order(HOST, &[UnitId(3), UnitId(1), UnitId(2)])
        );
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, units);
        // Hosts spread over the units.
        let firsts: std::collections::BTreeSet<UnitId> = (0..64)
            .map(|h| binding_order(HostId(h), &units)[0])
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn starts_with_a_resync_marker_then_ups_and_downs_in_order() {
        let t0 = Instant::now();
        let mut c = SessionChannel::new(settings(&[1, 2, 3]), t0);
        let bound = c.bound().expect("bound");
        let sent = drain(&mut c);
        assert!(
            matches!(&sent[..], [(u, Message::SessionResync(r))] if *u == bound && r.sessions == 0 && r.message_id == 1 && r.channel == 7)
        );
        assert_eq!(c.up(t0, ip(1), None), Ok(true));
        assert_eq!(
            c.up(t0, ip(1), None),
            Ok(false),
            "a repeated up sends nothing"
        );
        assert!(c.down(t0, &ip(1)).is_ok());
        assert_eq!(c.down(t0, &ip(1)), Err(ReportError::Unknown));
        let sent = drain(&mut c);
        assert_eq!(ids(&sent), [2, 3]);
        assert!(matches!(sent[0].1, Message::SessionUp(_)));
        assert!(matches!(sent[1].1, Message::SessionDown(_)));
        c.handle(t0, bound, &ack(3));
        assert_eq!(c.unacked(), 0);
        assert!(c.in_sync());
    }

    #[test]
    fn unacknowledged_messages_are_resent_and_the_window_is_kept() {
        let t0 = Instant::now();
        let mut c = SessionChannel::new(settings(&[1]), t0);
        for i in 0..6 {
            c.up(t0, ip(i), None).expect("room");
        }
        // Window of 4: the marker and 3 ups.
        assert_eq!(ids(&drain(&mut c)), [1, 2, 3, 4]);
        c.handle(t0, UnitId(1), &ack(2));
        assert_eq!(ids(&drain(&mut c)), [5, 6], "acks open the window");
        let t1 = t0 + Duration::from_millis(499);
        c.handle_timeout(t1);
        assert!(drain(&mut c).is_empty(), "not yet due");
        let t2 = t0 + Duration::from_millis(500);
        assert_eq!(c.poll_timeout(), Some(t2));
        c.handle_timeout(t2);
        assert_eq!(ids(&drain(&mut c)), [3, 4, 5, 6], "go back N");
        assert_eq!(c.counters().resent, 4);
        c.handle(t2, UnitId(1), &ack(7));
        assert_eq!(ids(&drain(&mut c)), Vec::<u64>::new());
        assert_eq!(c.unacked(), 0);
    }

    #[test]
    fn idle_channel_sends_keepalives_and_ignores_other_units() {
        let t0 = Instant::now();
        let mut c = SessionChannel::new(settings(&[1]), t0);
        drain(&mut c);
        c.handle(t0, UnitId(1), &ack(1));
        c.handle(t0, UnitId(9), &ack(1));
        assert_eq!(c.counters().ignored, 1);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(c.poll_timeout(), Some(t1));
        c.handle_timeout(t1);
        let sent = drain(&mut c);
        assert!(
            matches!(&sent[..], [(_, Message::SessionKeepalive(k))] if k.next_id == 2 && k.channel == 7)
        );
    }

    #[test]
    fn a_unit_that_lost_the_channel_gets_the_whole_table_again() {
        let t0 = Instant::now();
        let mut c = SessionChannel::new(settings(&[1]), t0);
        c.up(t0, ip(1), None).expect("room");
        c.up(t0, ip(2), None).expect("room");
        drain(&mut c);
        // Before the marker is acknowledged a request is ignored (the marker gets there).
        c.handle(
            t0,
            UnitId(1),
            &SessionResyncRequest { known_channel: 0 }.into(),
        );
        assert!(drain(&mut c).is_empty());
        c.handle(t0, UnitId(1), &ack(3));
        // The unit restarted: it asks for a resync.
        c.handle(
            t0,
            UnitId(1),
            &SessionResyncRequest { known_channel: 0 }.into(),
        );
        let sent = drain(&mut c);
        assert!(
            matches!(&sent[0].1, Message::SessionResync(r) if r.sessions == 2 && r.channel == 8 && r.message_id == 4)
        );
        assert_eq!(ids(&sent), [4, 5, 6]);
        // A late acknowledgement of the old channel acknowledges nothing new.
        c.handle(t0, UnitId(1), &ack(3));
        assert_eq!(c.unacked(), 3);
        assert!(!c.in_sync());
        c.handle(t0, UnitId(1), &ack(6));
        assert!(c.in_sync());
        assert_eq!(c.counters().resync_requests, 1);
    }

    #[test]
    fn a_silent_unit_is_left_for_the_next_in_the_ranking() {
        let t0 = Instant::now();
        let s = settings(&[1, 2, 3]);
        let order = binding_order(HOST, &s.units);
        let mut c = SessionChannel::new(s, t0);
        c.up(t0, ip(1), None).expect("room");
        drain(&mut c);
        // Nothing is ever acknowledged: resends every 500 ms, rebind after 3 s.
        let mut now = t0;
        for _ in 0..100 {
            let Some(at) = c.poll_timeout() else { break };
            now = at;
            c.handle_timeout(now);
            if c.counters().rebinds > 0 {
                break;
            }
        }
        assert_eq!(now, t0 + Duration::from_secs(3));
        assert_eq!(c.bound(), Some(order[1]));
        let sent = drain(&mut c);
        let to_new: Vec<u64> = ids(&sent[sent.len() - 2..]);
        assert!(sent[sent.len() - 2..].iter().all(|(u, _)| *u == order[1]));
        assert!(matches!(&sent[sent.len() - 2].1, Message::SessionResync(r) if r.sessions == 1));
        assert_eq!(to_new, [3, 4]);
        // The new unit answers: no further rebind.
        c.handle(now, order[1], &ack(4));
        c.handle_timeout(now + Duration::from_secs(2));
        assert_eq!(c.counters().rebinds, 1);
    }
}

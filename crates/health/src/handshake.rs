//! The postulate (drain) handshake of FIG. 15, host side: which rows wait
//! for their directive's *current* state to catch up with the *target*,
//! the round schedule, which units agreed, which were given up, and
//! whether the handshake is blocked.
//!
//! # Protocol
//!
//! When a row's target changes, the host publishes the row change at once.
//! After `postulate_delay` it sends a *round*: the postulates of every row
//! whose target differs from its current state, and resends a round every
//! `postulate_interval`. A round is one or more `PostulateTableState`
//! messages, split to fit a datagram (see [`crate::datagram`]); each message
//! carries its own round number (the wire's `round` field numbers messages,
//! not rounds), so an answer names exactly the postulates it answers.
//!
//! Units answer **every** postulate message with `PostulateWrong`; an
//! **empty** `wrong` list means "I hold every state postulated in that
//! message". The spec lets an agreeing unit stay silent, but then a host
//! cannot tell an agreeing unit from an unreachable one, and a drain would
//! complete while a cut-off unit still sends new connections to the
//! draining endpoint. Answering always makes agreement positive evidence.
//!
//! The host merges answers per row: a unit agrees with a row when it
//! answered a message that carried the row, sent after the row's target
//! change, without listing it. Answers are ordered by the message they
//! answer, so a late answer to an older message never overrides a newer
//! one; answers to messages of long-past rounds are ignored. A unit that
//! objects is sent a snapshot (by [`crate::HostProtocol`]).
//!
//! # Completion, give-up and the blocked state
//!
//! When every unit agreed, the handshake completes: current := target.
//!
//! A unit *silent* for `unit_give_up_after` since the handshake began (or
//! since it was last heard, whichever is later) is **given up** for that
//! handshake, so a dead unit cannot block drains forever — but only while
//! at least one *other* unit is answering (it agreed with the row, or it
//! was heard within `unit_give_up_after`). A given-up unit stops being
//! given up as soon as it is heard from again. A handshake completes when
//! every unit agreed or was given up **and at least one unit agreed**: a
//! drain never completes on nobody's word.
//!
//! When no unit agreed and every unit is silent, the host itself is most
//! likely cut off: the handshake is **blocked** (no unit reachable).
//! Nothing is given up, current stays, rounds continue, and the handshake
//! resumes as soon as units answer again. Silence during a blocked period
//! says nothing about any one unit, so after it a unit is given up only
//! once it stayed silent for `unit_give_up_after` after the period ended. [`HandshakeView::blocked`] shows
//! it and [`crate::HostCounters::handshakes_blocked`] counts each time a
//! handshake becomes blocked.
//!
//! A unit cut off for less than `unit_give_up_after` blocks completion
//! until it answers. A new target change restarts the row's handshake.
//!
//! Round numbers are `u32`, start at 1 and skip 0 when they wrap; answers
//! are matched against the messages of the last few rounds only, so
//! wrapping is harmless.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use switchyard_wire::health::{DirectiveState, Postulate, PostulateTableState, WrongPostulate};
use switchyard_wire::{AppId, HostId, UnitId};

use crate::datagram;
use crate::table::AppKey;

/// Answers to messages of this many most recent rounds are matched; older
/// ones are ignored.
const TRACKED_ROUNDS: usize = 4;

/// Progress of one row's handshake, for the local API and `ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeView {
    /// The application.
    pub app: AppId,
    /// The target state being postulated.
    pub target: DirectiveState,
    /// When the target change was published.
    pub started_at: Instant,
    /// Round number of the first message that postulated this row since
    /// the target change (`None` until sent).
    pub first_round: Option<u32>,
    /// Round number of the latest message that postulated this row (`None`
    /// until sent).
    pub round: Option<u32>,
    /// Units that hold the target state.
    pub agreed: Vec<UnitId>,
    /// Units the handshake waits for.
    pub waiting: Vec<UnitId>,
    /// Units given up on (silent for `unit_give_up_after` while another
    /// unit answers).
    pub given_up: Vec<UnitId>,
    /// No unit reachable: none agreed and every unit has been silent for
    /// `unit_give_up_after`. Current stays until units answer again.
    pub blocked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    /// Sequence number of the message answered.
    seq: u64,
    agreed: bool,
}

#[derive(Debug, Clone)]
struct Handshake {
    app: AppId,
    target: DirectiveState,
    started_at: Instant,
    /// Sequence number of the first message that carried the row.
    first_seq: Option<u64>,
    first_round: Option<u32>,
    last_round: Option<u32>,
    answers: BTreeMap<UnitId, Answer>,
    given_up: BTreeSet<UnitId>,
    blocked: bool,
    /// The last evaluation that found the handshake blocked.
    last_blocked: Option<Instant>,
}

impl Handshake {
    fn agreed(&self, unit: UnitId) -> bool {
        self.answers.get(&unit).is_some_and(|a| a.agreed)
    }
}

/// One postulate message sent, for matching answers.
#[derive(Debug, Clone)]
struct Sent {
    round: u32,
    seq: u64,
    keys: Vec<AppKey>,
}

/// Outcome of [`Handshakes::answer`].
#[derive(Debug, Default)]
pub(crate) struct Answered {
    /// Pending rows the unit objected to.
    pub objections: Vec<AppKey>,
    /// Rows the answered message carried.
    pub carried: Vec<AppKey>,
}

/// Outcome of [`Handshakes::evaluate`].
#[derive(Debug, Default)]
pub(crate) struct Evaluation {
    /// Rows whose handshake completed, with the state now current.
    pub completed: Vec<(AppKey, DirectiveState)>,
    /// Units newly given up on (summed over rows).
    pub newly_given_up: u64,
    /// Handshakes that became blocked (no unit reachable).
    pub newly_blocked: u64,
}

/// Every pending handshake of one host, and the round schedule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshakes {
    /// Last round number used on the wire.
    round: u32,
    /// Messages sent so far (orders answers; never wraps in practice).
    seq: u64,
    next_round_at: Option<Instant>,
    pending: BTreeMap<AppKey, Handshake>,
    last_heard: BTreeMap<UnitId, Instant>,
    /// The messages of the last [`TRACKED_ROUNDS`] rounds, one group per
    /// round.
    sent: VecDeque<Vec<Sent>>,
    /// Whether any handshake may have a unit given up.
    any_given_up: bool,
}

impl Handshakes {
    /// Starts (or restarts) the handshake of a row whose published target
    /// changed to `target`; the first round goes out after `delay` unless a
    /// round is already due sooner.
    pub fn start(
        &mut self,
        key: AppKey,
        app: AppId,
        target: DirectiveState,
        now: Instant,
        delay: Duration,
    ) {
        self.pending.insert(
            key,
            Handshake {
                app,
                target,
                started_at: now,
                first_seq: None,
                first_round: None,
                last_round: None,
                answers: BTreeMap::new(),
                given_up: BTreeSet::new(),
                blocked: false,
                last_blocked: None,
            },
        );
        let at = now.checked_add(delay).unwrap_or(now);
        self.next_round_at = Some(self.next_round_at.map_or(at, |t| t.min(at)));
    }

    /// The postulated target of a pending row.
    pub fn target(&self, key: &AppKey) -> Option<DirectiveState> {
        self.pending.get(key).map(|h| h.target)
    }

    /// Drops a row's handshake (row deleted, or target equals current).
    pub fn cancel(&mut self, key: &AppKey) {
        self.pending.remove(key);
        if self.pending.is_empty() {
            self.next_round_at = None;
        }
    }

    /// When the next round is due.
    pub fn next_round_at(&self) -> Option<Instant> {
        self.next_round_at
    }

    /// Whether a round is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next_round_at.is_some_and(|t| t <= now)
    }

    /// Records that `unit` was heard from (any message).
    pub fn heard(&mut self, unit: UnitId, now: Instant) {
        let t = self.last_heard.entry(unit).or_insert(now);
        *t = (*t).max(now);
        if self.any_given_up {
            for h in self.pending.values_mut() {
                h.given_up.remove(&unit);
            }
        }
    }

    fn next_round_number(&mut self) -> u32 {
        self.round = match self.round.wrapping_add(1) {
            0 => 1,
            r => r,
        };
        self.round
    }

    /// Starts the next round: the messages to send to every unit (none when
    /// nothing is pending), each within `max_payload` bytes.
    pub fn next_round(
        &mut self,
        host: HostId,
        now: Instant,
        interval: Duration,
        max_payload: usize,
    ) -> Vec<PostulateTableState> {
        if self.pending.is_empty() {
            self.next_round_at = None;
            return Vec::new();
        }
        let entries: Vec<(AppKey, Postulate)> = self
            .pending
            .iter()
            .map(|(key, h)| {
                let postulate = Postulate {
                    app: h.app.clone(),
                    state: h.target,
                };
                (key.clone(), postulate)
            })
            .collect();
        let chunks = datagram::chunk_by_size(
            entries,
            datagram::postulate_base(),
            max_payload,
            |(_, p)| datagram::postulate_len(p),
        );
        let mut messages = Vec::with_capacity(chunks.len());
        let mut group = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let round = self.next_round_number();
            self.seq += 1;
            let seq = self.seq;
            let mut keys = Vec::with_capacity(chunk.len());
            let mut postulates = Vec::with_capacity(chunk.len());
            for (key, postulate) in chunk {
                if let Some(h) = self.pending.get_mut(&key) {
                    h.first_seq.get_or_insert(seq);
                    h.first_round.get_or_insert(round);
                    h.last_round = Some(round);
                }
                keys.push(key);
                postulates.push(postulate);
            }
            group.push(Sent { round, seq, keys });
            messages.push(PostulateTableState {
                host,
                round,
                postulates,
            });
        }
        self.sent.push_back(group);
        while self.sent.len() > TRACKED_ROUNDS {
            self.sent.pop_front();
        }
        self.next_round_at = Some(now.checked_add(interval).unwrap_or(now));
        messages
    }

    /// Records `unit`'s answer to the message numbered `round`: the keys of
    /// pending rows it objected to, and of the rows the message carried.
    pub fn answer(
        &mut self,
        unit: UnitId,
        round: u32,
        wrong: &[WrongPostulate],
        now: Instant,
    ) -> Answered {
        self.heard(unit, now);
        let Some(sent) = self.sent.iter().flatten().rev().find(|m| m.round == round) else {
            return Answered::default(); // an answer to a long-past round, or forged
        };
        let mut objections = Vec::new();
        for key in &sent.keys {
            let Some(h) = self.pending.get_mut(key) else {
                continue;
            };
            // Messages before the row's first one predate its target change.
            if h.first_seq.is_none_or(|first| sent.seq < first) {
                continue;
            }
            if h.answers.get(&unit).is_some_and(|a| a.seq > sent.seq) {
                continue; // a late answer to an older message
            }
            let objected = wrong.iter().any(|w| w.app == h.app);
            h.answers.insert(
                unit,
                Answer {
                    seq: sent.seq,
                    agreed: !objected,
                },
            );
            if objected {
                objections.push(key.clone());
            }
        }
        Answered {
            objections,
            carried: sent.keys.clone(),
        }
    }

    /// Gives up on silent units (while another unit answers), marks
    /// handshakes no unit can be reached for as blocked, and completes
    /// handshakes every remaining unit agreed with (at least one).
    pub fn evaluate(
        &mut self,
        units: &[UnitId],
        now: Instant,
        give_up_after: Duration,
    ) -> Evaluation {
        let keys: Vec<AppKey> = self.pending.keys().cloned().collect();
        self.evaluate_rows(&keys, units, now, give_up_after)
    }

    /// [`Self::evaluate`] for the rows `keys` only (after an answer: the
    /// rows its message carried).
    pub fn evaluate_rows(
        &mut self,
        keys: &[AppKey],
        units: &[UnitId],
        now: Instant,
        give_up_after: Duration,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        let mut done = Vec::new();
        for key in keys {
            let Some(h) = self.pending.get_mut(key) else {
                continue;
            };
            if h.first_seq.is_none() {
                continue;
            }
            // Silent for the deadline since `base` (or since last heard).
            let (answers, last_heard) = (&h.answers, &self.last_heard);
            let silent_since = |unit: &UnitId, base: Instant| {
                let since = last_heard.get(unit).map_or(base, |t| (*t).max(base));
                let agreed = answers.get(unit).is_some_and(|a| a.agreed);
                !agreed && now.saturating_duration_since(since) >= give_up_after
            };
            let answering = units
                .iter()
                .filter(|u| !silent_since(u, h.started_at))
                .count();
            let blocked = !units.is_empty() && answering == 0;
            if blocked {
                if !h.blocked {
                    out.newly_blocked += 1;
                }
                h.last_blocked = Some(now);
            }
            h.blocked = blocked;
            // A silent unit is given up only while another unit answers
            // (silent units never answer, so any answering unit is another),
            // and its silence counts only from the end of the last blocked
            // period: while the host heard nobody, silence says nothing
            // about one unit.
            let base = h.last_blocked.map_or(h.started_at, |t| t.max(h.started_at));
            let given_up: BTreeSet<UnitId> = if blocked {
                BTreeSet::new()
            } else {
                units
                    .iter()
                    .copied()
                    .filter(|u| silent_since(u, base))
                    .collect()
            };
            out.newly_given_up += given_up.difference(&h.given_up).count() as u64;
            self.any_given_up |= !given_up.is_empty();
            h.given_up = given_up;
            let any_agreed = units.iter().any(|u| h.agreed(*u));
            let complete = (units.is_empty() || any_agreed)
                && units.iter().all(|u| h.agreed(*u) || h.given_up.contains(u));
            if complete {
                done.push((key.clone(), h.target));
            }
        }
        for (key, _) in &done {
            self.cancel(key);
        }
        out.completed = done;
        out
    }

    /// Progress of a row's handshake.
    pub fn view(&self, key: &AppKey, units: &[UnitId]) -> Option<HandshakeView> {
        let h = self.pending.get(key)?;
        let mut agreed = Vec::new();
        let mut waiting = Vec::new();
        for &unit in units {
            if h.agreed(unit) {
                agreed.push(unit);
            } else if !h.given_up.contains(&unit) {
                waiting.push(unit);
            }
        }
        Some(HandshakeView {
            app: h.app.clone(),
            target: h.target,
            started_at: h.started_at,
            first_round: h.first_round,
            round: h.last_round,
            agreed,
            waiting,
            given_up: h.given_up.iter().copied().collect(),
            blocked: h.blocked,
        })
    }

    /// Keys of every pending row.
    pub fn keys(&self) -> impl Iterator<Item = &AppKey> + '_ {
        self.pending.keys()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use switchyard_wire::Protocol;

    use super::*;

    fn app(port: u16) -> AppId {
        AppId {
            vip: SocketAddr::from(([10, 0, 0, 1], 80)),
            protocol: Protocol::Tcp,
            endpoint: SocketAddr::from(([192, 168, 1, 2], port)),
            info: String::new(),
        }
    }

    const MS: Duration = Duration::from_millis(1);
    const UNITS: [UnitId; 2] = [UnitId(100), UnitId(101)];
    const MAX: usize = crate::datagram::DEFAULT_MAX_DATAGRAM_PAYLOAD;
    const GIVE_UP: Duration = Duration::from_secs(30);

    fn one(mut round: Vec<PostulateTableState>) -> PostulateTableState {
        assert_eq!(round.len(), 1, "one message per round");
        round.pop().expect("one")
    }

    fn started(t0: Instant) -> (Handshakes, AppKey) {
        let mut hs = Handshakes::default();
        let key = AppKey::new(&app(1)).expect("valid");
        hs.start(key.clone(), app(1), DirectiveState::Draining, t0, 200 * MS);
        (hs, key)
    }

    #[test]
    fn completes_only_when_every_unit_agreed_in_a_counting_round() {
        let t0 = Instant::now();
        let (mut hs, key) = started(t0);
        assert_eq!(hs.next_round_at(), Some(t0 + 200 * MS));
        // An answer to a round before the change does not count.
        hs.answer(UNITS[0], 0, &[], t0);
        let m = one(hs.next_round(HostId(1), t0 + 200 * MS, 500 * MS, MAX));
        assert_eq!(m.round, 1);
        assert_eq!(m.postulates.len(), 1);
        let e = hs.evaluate(&UNITS, t0 + 200 * MS, 30_000 * MS);
        assert!(e.completed.is_empty());
        hs.answer(UNITS[0], 1, &[], t0 + 210 * MS);
        let objection = [WrongPostulate {
            app: app(1),
            actual: Some(DirectiveState::Active),
        }];
        assert_eq!(
            hs.answer(UNITS[1], 1, &objection, t0 + 210 * MS).objections,
            vec![key.clone()]
        );
        assert!(
            hs.evaluate(&UNITS, t0 + 210 * MS, 30_000 * MS)
                .completed
                .is_empty()
        );
        let v = hs.view(&key, &UNITS).expect("pending");
        assert_eq!(v.agreed, vec![UNITS[0]]);
        assert_eq!(v.waiting, vec![UNITS[1]]);
        one(hs.next_round(HostId(1), t0 + 700 * MS, 500 * MS, MAX));
        hs.answer(UNITS[1], 2, &[], t0 + 710 * MS);
        // A late duplicate of the round-1 objection does not undo agreement.
        hs.answer(UNITS[1], 1, &objection, t0 + 720 * MS);
        let e = hs.evaluate(&UNITS, t0 + 720 * MS, 30_000 * MS);
        assert_eq!(e.completed, vec![(key.clone(), DirectiveState::Draining)]);
        assert!(hs.view(&key, &UNITS).is_none());
        assert_eq!(hs.next_round_at(), None);
    }

    #[test]
    fn silent_unit_is_given_up_after_the_deadline_and_back_when_heard() {
        let t0 = Instant::now();
        let (mut hs, key) = started(t0);
        one(hs.next_round(HostId(1), t0 + 200 * MS, 500 * MS, MAX));
        hs.answer(UNITS[0], 1, &[], t0 + 210 * MS);
        let e = hs.evaluate(&UNITS, t0 + 29_000 * MS, 30_000 * MS);
        assert!(e.completed.is_empty());
        assert_eq!(e.newly_given_up, 0);
        hs.heard(UNITS[1], t0 + 29_500 * MS);
        let e = hs.evaluate(&UNITS, t0 + 31_000 * MS, 30_000 * MS);
        assert!(e.completed.is_empty(), "heard recently: not given up");
        let e = hs.evaluate(&UNITS, t0 + 59_500 * MS, 30_000 * MS);
        assert_eq!(e.newly_given_up, 1);
        assert_eq!(e.completed, vec![(key, DirectiveState::Draining)]);
    }

    #[test]
    fn restart_resets_agreement() {
        let t0 = Instant::now();
        let (mut hs, key) = started(t0);
        one(hs.next_round(HostId(1), t0 + 200 * MS, 500 * MS, MAX));
        hs.answer(UNITS[0], 1, &[], t0 + 210 * MS);
        hs.start(
            key.clone(),
            app(1),
            DirectiveState::Inactive,
            t0 + 300 * MS,
            200 * MS,
        );
        // The round-1 answer (before the restart) is forgotten, and a late
        // answer to round 1 does not count for the new handshake.
        let v = hs.view(&key, &UNITS).expect("pending");
        assert!(v.agreed.is_empty());
        one(hs.next_round(HostId(1), t0 + 700 * MS, 500 * MS, MAX));
        hs.answer(UNITS[0], 1, &[], t0 + 710 * MS);
        assert!(hs.view(&key, &UNITS).expect("pending").agreed.is_empty());
    }

    #[test]
    fn no_unit_answering_blocks_the_handshake_instead_of_completing_it() {
        let t0 = Instant::now();
        let (mut hs, key) = started(t0);
        one(hs.next_round(HostId(1), t0 + 200 * MS, 500 * MS, MAX));
        let e = hs.evaluate(&UNITS, t0 + 29_000 * MS, GIVE_UP);
        assert_eq!((e.newly_blocked, e.newly_given_up), (0, 0));
        assert!(!hs.view(&key, &UNITS).expect("pending").blocked);
        // Every unit silent past the deadline, none agreed: blocked, and
        // nobody is given up (that would complete on nobody's word).
        let e = hs.evaluate(&UNITS, t0 + 31_000 * MS, GIVE_UP);
        assert!(e.completed.is_empty());
        assert_eq!((e.newly_blocked, e.newly_given_up), (1, 0));
        let v = hs.view(&key, &UNITS).expect("pending");
        assert!(v.blocked);
        assert!(v.given_up.is_empty());
        assert_eq!(v.waiting, UNITS.to_vec());
        // Still blocked later: counted once.
        let e = hs.evaluate(&UNITS, t0 + 300_000 * MS, GIVE_UP);
        assert!(e.completed.is_empty());
        assert_eq!(e.newly_blocked, 0);
        // One unit answers (objecting): no longer blocked. The other's
        // silence counts only from the end of the blocked period.
        let m = one(hs.next_round(HostId(1), t0 + 300_000 * MS, 500 * MS, MAX));
        let objection = [WrongPostulate {
            app: app(1),
            actual: None,
        }];
        hs.answer(UNITS[0], m.round, &objection, t0 + 300_010 * MS);
        let e = hs.evaluate(&UNITS, t0 + 300_010 * MS, GIVE_UP);
        assert!(e.completed.is_empty());
        assert_eq!(e.newly_given_up, 0);
        let v = hs.view(&key, &UNITS).expect("pending");
        assert!(!v.blocked);
        assert!(v.given_up.is_empty());
        // It agrees: still waiting for the other unit ...
        let m = one(hs.next_round(HostId(1), t0 + 300_500 * MS, 500 * MS, MAX));
        hs.answer(UNITS[0], m.round, &[], t0 + 300_510 * MS);
        let e = hs.evaluate(&UNITS, t0 + 300_510 * MS, GIVE_UP);
        assert!(e.completed.is_empty());
        // ... until that one was silent for the deadline after the period.
        let e = hs.evaluate(&UNITS, t0 + 330_000 * MS, GIVE_UP);
        assert_eq!(e.newly_given_up, 1);
        assert_eq!(e.completed, vec![(key, DirectiveState::Draining)]);
    }

    #[test]
    fn a_round_too_large_for_a_datagram_is_split_and_answers_merge() {
        let t0 = Instant::now();
        let mut hs = Handshakes::default();
        let apps: Vec<AppId> = (1..=40)
            .map(|port| AppId {
                info: "x".repeat(200),
                ..app(port)
            })
            .collect();
        let keys: Vec<AppKey> = apps
            .iter()
            .map(|a| AppKey::new(a).expect("valid"))
            .collect();
        for (key, a) in keys.iter().zip(&apps) {
            hs.start(
                key.clone(),
                a.clone(),
                DirectiveState::Draining,
                t0,
                Duration::ZERO,
            );
        }
        let round = hs.next_round(HostId(1), t0, 500 * MS, MAX);
        assert!(round.len() > 1, "split");
        let mut carried = 0;
        for m in &round {
            let len = switchyard_wire::Message::from(m.clone())
                .encode_payload()
                .expect("encodes")
                .len();
            assert!(len <= MAX, "{len} bytes");
            carried += m.postulates.len();
        }
        assert_eq!(carried, apps.len());
        // Unit 0 agrees with every message; unit 1 with all but the last.
        for m in &round {
            hs.answer(UNITS[0], m.round, &[], t0 + MS);
        }
        let (last, rest) = round.split_last().expect("messages");
        for m in rest {
            hs.answer(UNITS[1], m.round, &[], t0 + MS);
        }
        let e = hs.evaluate(&UNITS, t0 + MS, GIVE_UP);
        // An answer covers only the rows its message carried.
        assert_eq!(e.completed.len(), apps.len() - last.postulates.len());
        let pending: Vec<AppKey> = hs.keys().cloned().collect();
        assert_eq!(pending.len(), last.postulates.len());
        let next = hs.next_round(HostId(1), t0 + 500 * MS, 500 * MS, MAX);
        for m in &next {
            hs.answer(UNITS[1], m.round, &[], t0 + 501 * MS);
        }
        let e = hs.evaluate(&UNITS, t0 + 501 * MS, GIVE_UP);
        assert_eq!(e.completed.len(), last.postulates.len());
        assert_eq!(hs.next_round_at(), None);
    }
}

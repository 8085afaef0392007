//! The postulate (drain) handshake of FIG. 15, host side: which rows wait
//! for their directive's *current* state to catch up with the *target*,
//! the round schedule, which units agreed, and which were given up.
//!
//! # Protocol
//!
//! When a row's target changes, the host publishes the row change at once.
//! After `postulate_delay` it sends `PostulateTableState { round, postulates }`
//! listing every row whose target differs from its current state, and
//! resends it every `postulate_interval` with a new round number.
//!
//! Units answer **every** postulate round with `PostulateWrong`; an **empty**
//! `wrong` list means "I hold every postulated state". The spec lets an
//! agreeing unit stay silent, but then a host cannot tell an agreeing unit
//! from an unreachable one, and a drain would complete while a cut-off unit
//! still sends new connections to the draining endpoint. Answering always
//! makes agreement positive evidence.
//!
//! A unit agrees with a row when it answered a round that started after the
//! row's target change (the row's *first round* or later) without listing
//! the row. A unit that objects gets the row resent at once (by
//! [`crate::HostProtocol`]). Answers are tracked per unit by round, so a
//! late answer to an older round never overrides a newer one.
//!
//! When every unit agreed, the handshake completes: current := target. A
//! unit that has not been heard from for `unit_give_up_after` since the
//! handshake began (or since it was last heard, whichever is later) is
//! *given up* for that handshake so a dead unit cannot block drains forever;
//! it stops being given up as soon as it is heard from again. A unit cut off
//! for less than that blocks completion until it answers. A new target
//! change restarts the row's handshake.
//!
//! Round numbers are `u32` and start at 1; at two rounds a second they
//! would wrap after 68 years of continuous handshakes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use switchyard_wire::health::{DirectiveState, Postulate, PostulateTableState, WrongPostulate};
use switchyard_wire::{AppId, HostId, UnitId};

use crate::table::AppKey;

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
    /// The first round that counts for this handshake (`None` until sent).
    pub first_round: Option<u32>,
    /// The latest round that postulated this row (`None` until sent).
    pub round: Option<u32>,
    /// Units that hold the target state.
    pub agreed: Vec<UnitId>,
    /// Units the handshake waits for.
    pub waiting: Vec<UnitId>,
    /// Units given up on (silent for `unit_give_up_after`).
    pub given_up: Vec<UnitId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    round: u32,
    agreed: bool,
}

#[derive(Debug, Clone)]
struct Handshake {
    app: AppId,
    target: DirectiveState,
    started_at: Instant,
    first_round: Option<u32>,
    answers: BTreeMap<UnitId, Answer>,
    given_up: BTreeSet<UnitId>,
}

impl Handshake {
    fn agreed(&self, unit: UnitId) -> bool {
        self.answers.get(&unit).is_some_and(|a| a.agreed)
    }
}

/// Outcome of [`Handshakes::evaluate`].
#[derive(Debug, Default)]
pub(crate) struct Evaluation {
    /// Rows whose handshake completed, with the state now current.
    pub completed: Vec<(AppKey, DirectiveState)>,
    /// Units newly given up on (summed over rows).
    pub newly_given_up: u64,
}

/// Every pending handshake of one host, and the round schedule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handshakes {
    round: u32,
    next_round_at: Option<Instant>,
    pending: BTreeMap<AppKey, Handshake>,
    last_heard: BTreeMap<UnitId, Instant>,
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
                first_round: None,
                answers: BTreeMap::new(),
                given_up: BTreeSet::new(),
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
        for h in self.pending.values_mut() {
            h.given_up.remove(&unit);
        }
    }

    /// Starts the next round: the message to send to every unit, or `None`
    /// when nothing is pending.
    pub fn next_round(
        &mut self,
        host: HostId,
        now: Instant,
        interval: Duration,
    ) -> Option<PostulateTableState> {
        if self.pending.is_empty() {
            self.next_round_at = None;
            return None;
        }
        self.round = match self.round.wrapping_add(1) {
            0 => 1,
            r => r,
        };
        let round = self.round;
        let mut postulates = Vec::with_capacity(self.pending.len());
        for h in self.pending.values_mut() {
            h.first_round.get_or_insert(round);
            postulates.push(Postulate {
                app: h.app.clone(),
                state: h.target,
            });
        }
        self.next_round_at = Some(now.checked_add(interval).unwrap_or(now));
        Some(PostulateTableState {
            host,
            round,
            postulates,
        })
    }

    /// Records `unit`'s answer to `round`; returns the keys of pending rows
    /// it objected to (to be resent to it).
    pub fn answer(
        &mut self,
        unit: UnitId,
        round: u32,
        wrong: &[WrongPostulate],
        now: Instant,
    ) -> Vec<AppKey> {
        self.heard(unit, now);
        let mut objections = Vec::new();
        for (key, h) in &mut self.pending {
            let Some(first) = h.first_round else {
                continue;
            };
            // Rounds before the row's first round predate its target change.
            if round < first {
                continue;
            }
            if h.answers.get(&unit).is_some_and(|a| a.round > round) {
                continue; // a late answer to an older round
            }
            let objected = wrong.iter().any(|w| w.app == h.app);
            h.answers.insert(
                unit,
                Answer {
                    round,
                    agreed: !objected,
                },
            );
            if objected {
                objections.push(key.clone());
            }
        }
        objections
    }

    /// Gives up on silent units and completes handshakes every remaining
    /// unit agreed with.
    pub fn evaluate(
        &mut self,
        units: &[UnitId],
        now: Instant,
        give_up_after: Duration,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        let mut done = Vec::new();
        for (key, h) in &mut self.pending {
            if h.first_round.is_none() {
                continue;
            }
            let mut complete = true;
            for &unit in units {
                if h.agreed(unit) {
                    continue;
                }
                let since = self
                    .last_heard
                    .get(&unit)
                    .map_or(h.started_at, |t| (*t).max(h.started_at));
                if now.saturating_duration_since(since) >= give_up_after {
                    if h.given_up.insert(unit) {
                        out.newly_given_up += 1;
                    }
                } else {
                    complete = false;
                }
            }
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
            round: h.first_round.map(|_| self.round),
            agreed,
            waiting,
            given_up: h.given_up.iter().copied().collect(),
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
        let m = hs
            .next_round(HostId(1), t0 + 200 * MS, 500 * MS)
            .expect("round");
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
            hs.answer(UNITS[1], 1, &objection, t0 + 210 * MS),
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
        hs.next_round(HostId(1), t0 + 700 * MS, 500 * MS)
            .expect("round 2");
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
        hs.next_round(HostId(1), t0 + 200 * MS, 500 * MS);
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
        hs.next_round(HostId(1), t0 + 200 * MS, 500 * MS);
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
        hs.next_round(HostId(1), t0 + 700 * MS, 500 * MS);
        hs.answer(UNITS[0], 1, &[], t0 + 710 * MS);
        assert!(hs.view(&key, &UNITS).expect("pending").agreed.is_empty());
    }
}

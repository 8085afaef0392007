//! HostProtocol behaviour through its public API, one rule at a time.

use std::time::{Duration, Instant};

use switchyard_health::host::GOODBYE_REPEAT;
use switchyard_health::{
    CacheSettings, ConsolidatedCache, HealthError, HostProtocol, HostSettings, Ignored, Transmit,
};
use switchyard_wire::health::{
    ContentCheck, DirectiveState, GetTableSnapshot, Health, PostulateWrong, RowOp, WrongPostulate,
};
use switchyard_wire::{AppId, HostId, Message, MessageKind, SenderId, UnitId};

use crate::sim::{MS, SEC, app, host_settings, status, unit_id};

fn drain(h: &mut HostProtocol) -> Vec<Transmit<UnitId>> {
    std::iter::from_fn(|| h.poll_transmit()).collect()
}

fn new_host(units: usize) -> (HostProtocol, Instant) {
    let t0 = Instant::now();
    let mut h = HostProtocol::new(host_settings(0, units), t0).expect("valid");
    h.handle_timeout(t0);
    drain(&mut h);
    (h, t0)
}

fn row_changes(out: &[Transmit<UnitId>]) -> Vec<(UnitId, u64, Vec<RowOp>)> {
    out.iter()
        .filter_map(|t| match &t.message {
            Message::RowChange(rc) => Some((t.to, rc.generation, rc.ops.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeats_go_to_every_unit_with_the_name_every_tenth_time() {
    let t0 = Instant::now();
    let mut h = HostProtocol::new(host_settings(0, 2), t0).expect("valid");
    assert_eq!(h.poll_timeout(), Some(t0));
    let mut named = 0;
    for n in 0..20u32 {
        let now = t0 + n * SEC;
        assert_eq!(h.poll_timeout(), Some(now));
        h.handle_timeout(now);
        let out = drain(&mut h);
        assert_eq!(out.len(), 2);
        for t in &out {
            let Message::Heartbeat(hb) = &t.message else {
                panic!("heartbeat expected")
            };
            assert_eq!(hb.host, HostId(1));
            assert!(hb.address.is_some());
            assert!(!hb.forward);
            assert_eq!(
                hb.check,
                ContentCheck::Table {
                    generation: 1000,
                    digest: h.published().digest()
                }
            );
            if hb.name.is_some() {
                named += 1;
            }
        }
        assert_eq!(out[0].to, unit_id(0));
        assert_eq!(out[1].to, unit_id(1));
    }
    assert_eq!(named, 4, "heartbeats 0 and 10, to both units");
    assert_eq!(h.counters().sent.get(MessageKind::Heartbeat), 40);
}

#[test]
fn changes_are_coalesced_into_one_row_change() {
    let (mut h, t0) = new_host(2);
    for k in 0..3 {
        h.set_app(t0, app(0, k), status(Health::Healthy, 10, 50))
            .expect("valid");
    }
    h.set_app(t0, app(0, 1), status(Health::Failing, 10, 50))
        .expect("valid");
    h.remove_app(t0, &app(0, 2)).expect("known");
    assert!(h.has_unpublished_changes());
    let changes = row_changes(&drain(&mut h));
    assert_eq!(changes.len(), 2, "one per unit");
    let (_, generation, ops) = &changes[0];
    assert_eq!(*generation, 1001);
    assert_eq!(ops.len(), 2);
    assert!(ops.iter().all(|op| matches!(op, RowOp::Add(_))));
    assert!(matches!(&ops[1], RowOp::Add(r) if r.status.health() == Health::Failing));
    assert_eq!(h.published().len(), 2);
    assert!(!h.has_unpublished_changes());
    assert_eq!(h.counters().row_changes_published, 1);
}

#[test]
fn load_only_changes_are_rate_limited_but_ride_along() {
    let (mut h, t0) = new_host(1);
    let a = app(0, 0);
    h.set_app(t0, a.clone(), status(Health::Healthy, 10, 50))
        .expect("valid");
    drain(&mut h);
    // The first load-only change goes out at once.
    h.set_app(t0, a.clone(), status(Health::Healthy, 20, 50))
        .expect("valid");
    assert_eq!(row_changes(&drain(&mut h)).len(), 1);
    // The next waits for the load interval...
    let t1 = t0 + SEC;
    h.set_app(t1, a.clone(), status(Health::Healthy, 30, 50))
        .expect("valid");
    assert!(row_changes(&drain(&mut h)).is_empty());
    assert_eq!(h.published().get(&a).expect("row").status.load(), 20);
    assert_eq!(h.row(&a).expect("row").row.status.load(), 30);
    assert_eq!(h.poll_timeout(), Some(t0 + SEC), "heartbeat first");
    // ...and heartbeats keep describing the published table meanwhile.
    h.handle_timeout(t1);
    let out = drain(&mut h);
    let Message::Heartbeat(hb) = &out[0].message else {
        panic!("heartbeat")
    };
    assert_eq!(
        hb.check,
        ContentCheck::Table {
            generation: h.published().generation(),
            digest: h.published().digest()
        }
    );
    assert!(h.poll_timeout().is_some_and(|t| t <= t0 + 15 * SEC));
    h.handle_timeout(t0 + 15 * SEC);
    let changes = row_changes(&drain(&mut h));
    assert_eq!(changes.len(), 1);
    assert!(matches!(&changes[0].2[0], RowOp::Update(r) if r.status.load() == 30));
    // An immediate change of the same row carries its load along.
    let t2 = t0 + 16 * SEC;
    h.set_app(t2, a.clone(), status(Health::Healthy, 60, 50))
        .expect("valid");
    h.set_app(t2, a.clone(), status(Health::Healthy, 60, 40))
        .expect("valid");
    let changes = row_changes(&drain(&mut h));
    assert_eq!(changes.len(), 1);
    assert!(
        matches!(&changes[0].2[0], RowOp::Update(r) if r.status.load() == 60 && r.status.capacity() == 40)
    );
    assert!(!h.has_unpublished_changes());
}

#[test]
fn reported_load_is_smoothed() {
    let (mut h, t0) = new_host(1);
    let a = app(0, 0);
    h.set_app(t0, a.clone(), status(Health::Healthy, 0, 50))
        .expect("valid");
    assert_eq!(h.report_load(t0, &a, 40).expect("known"), Some(40));
    assert_eq!(h.report_load(t0, &a, 45).expect("known"), None);
    assert_eq!(h.row(&a).expect("row").row.status.load(), 40);
    assert!(matches!(
        h.report_load(t0, &app(0, 9), 10),
        Err(HealthError::UnknownApp(_))
    ));
}

#[test]
fn snapshots_are_served_in_parts() {
    let t0 = Instant::now();
    let s = host_settings(0, 2);
    let max = s.max_datagram_payload;
    let mut h = HostProtocol::new(s, t0).expect("valid");
    for k in 0..450 {
        h.set_app(t0, app(0, k), status(Health::Healthy, 1, 1))
            .expect("valid");
    }
    drain(&mut h);
    let get = Message::from(GetTableSnapshot {
        requester: unit_id(1),
    });
    h.handle(t0, unit_id(1), &get).expect("served");
    let parts: Vec<_> = drain(&mut h)
        .into_iter()
        .map(|t| {
            assert_eq!(t.to, unit_id(1));
            match t.message {
                Message::SendTableSnapshot(s) => s,
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect();
    // Split by encoded size: every part fits the datagram target.
    assert!(parts.len() > 1);
    let n = u16::try_from(parts.len()).expect("few parts");
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(usize::from(p.part), i);
        assert_eq!(p.parts, n);
        assert_eq!(p.generation, h.published().generation());
        let len = Message::from(p.clone())
            .encode_payload()
            .expect("encodes")
            .len();
        assert!(len <= max, "part {i}: {len} bytes");
    }
    assert_eq!(parts.iter().map(|p| p.rows.len()).sum::<usize>(), 450);
    assert_eq!(h.counters().snapshots_served, 1);
    // A unit may only ask for itself.
    assert!(matches!(
        h.handle(t0, unit_id(0), &get),
        Err(Ignored::UnitMismatch { .. })
    ));
    // An empty table is one empty part.
    let mut empty = HostProtocol::new(host_settings(1, 1), t0).expect("valid");
    let get = Message::from(GetTableSnapshot {
        requester: unit_id(0),
    });
    empty.handle(t0, unit_id(0), &get).expect("served");
    let out: Vec<_> = drain(&mut empty);
    assert!(out.iter().any(
        |t| matches!(&t.message, Message::SendTableSnapshot(s) if s.parts == 1 && s.rows.is_empty())
    ));
}

#[test]
fn messages_about_other_hosts_or_for_units_are_ignored() {
    let (mut h, t0) = new_host(2);
    let other = Message::from(PostulateWrong {
        host: HostId(9),
        unit: unit_id(0),
        round: 1,
        wrong: vec![],
    });
    assert_eq!(
        h.handle(t0, unit_id(0), &other),
        Err(Ignored::OtherHost {
            expected: HostId(1),
            got: HostId(9)
        })
    );
    let stranger = Message::from(PostulateWrong {
        host: HostId(1),
        unit: UnitId(999),
        round: 1,
        wrong: vec![],
    });
    assert_eq!(
        h.handle(t0, UnitId(999), &stranger),
        Err(Ignored::UnknownUnit(UnitId(999)))
    );
    let goodbye = Message::from(switchyard_wire::health::Goodbye { host: HostId(1) });
    assert_eq!(
        h.handle(t0, unit_id(0), &goodbye),
        Err(Ignored::NotForThisMachine(MessageKind::Goodbye))
    );
    assert_eq!(h.counters().ignored, 3);
    assert_eq!(h.counters().received.total(), 3);
}

fn start_drain(units: usize) -> (HostProtocol, Instant, AppId) {
    let (mut h, t0) = new_host(units);
    let a = app(0, 0);
    h.set_app(t0, a.clone(), status(Health::Healthy, 10, 50))
        .expect("valid");
    drain(&mut h);
    h.set_target(t0, &a, DirectiveState::Draining)
        .expect("known");
    let changes = row_changes(&drain(&mut h));
    assert_eq!(changes.len(), units, "target change published at once");
    (h, t0, a)
}

fn postulate_round(h: &mut HostProtocol, now: Instant) -> u32 {
    h.handle_timeout(now);
    let out = drain(h);
    let rounds: Vec<u32> = out
        .iter()
        .filter_map(|t| match &t.message {
            Message::PostulateTableState(p) => Some(p.round),
            _ => None,
        })
        .collect();
    assert!(!rounds.is_empty(), "a round at {now:?}");
    rounds[0]
}

#[test]
fn postulates_start_after_the_delay_and_objections_get_a_snapshot() {
    let (mut h, t0, a) = start_drain(2);
    assert_eq!(h.poll_timeout(), Some(t0 + 200 * MS));
    let round = postulate_round(&mut h, t0 + 200 * MS);
    let objection = Message::from(PostulateWrong {
        host: HostId(1),
        unit: unit_id(1),
        round,
        wrong: vec![WrongPostulate {
            app: a.clone(),
            actual: Some(DirectiveState::Active),
        }],
    });
    h.handle(t0 + 210 * MS, unit_id(1), &objection)
        .expect("handled");
    // The objecting unit gets a complete copy, not the row alone.
    let out = drain(&mut h);
    assert!(row_changes(&out).is_empty());
    assert!(!out.is_empty());
    for t in &out {
        assert_eq!(t.to, unit_id(1));
        let Message::SendTableSnapshot(s) = &t.message else {
            panic!("snapshot expected: {:?}", t.message)
        };
        assert_eq!(s.generation, h.published().generation());
    }
    assert_eq!(h.counters().snapshots_served, 1);
    // Within the postulate interval, objections do not repeat it.
    h.handle(t0 + 220 * MS, unit_id(1), &objection)
        .expect("handled");
    assert!(drain(&mut h).is_empty());
    assert_eq!(h.counters().rows_resent, 2);
    let agree = |unit, round| {
        Message::from(PostulateWrong {
            host: HostId(1),
            unit,
            round,
            wrong: vec![],
        })
    };
    h.handle(t0 + 210 * MS, unit_id(0), &agree(unit_id(0), round))
        .expect("handled");
    let view = h.row(&a).expect("row");
    assert_eq!(view.row.directive.current, DirectiveState::Active);
    let hs = view.handshake.expect("pending");
    assert_eq!(hs.agreed, vec![unit_id(0)]);
    assert_eq!(hs.waiting, vec![unit_id(1)]);
    let round2 = postulate_round(&mut h, t0 + 700 * MS);
    assert_eq!(round2, round + 1);
    h.handle(t0 + 710 * MS, unit_id(1), &agree(unit_id(1), round2))
        .expect("handled");
    assert_eq!(
        h.row(&a).expect("row").row.directive.current,
        DirectiveState::Draining
    );
    let changes = row_changes(&drain(&mut h));
    assert_eq!(changes.len(), 2, "current published to every unit");
    assert!(
        matches!(&changes[0].2[0], RowOp::Update(r) if r.directive.current == DirectiveState::Draining)
    );
    assert_eq!(h.counters().handshakes_completed, 1);
    assert!(h.handshakes().is_empty());
    assert_eq!(h.poll_timeout(), Some(t0 + SEC), "no more rounds");
}

#[test]
fn a_new_target_restarts_the_handshake() {
    let (mut h, t0, a) = start_drain(1);
    let round = postulate_round(&mut h, t0 + 200 * MS);
    h.set_target(t0 + 300 * MS, &a, DirectiveState::Inactive)
        .expect("known");
    drain(&mut h);
    // Agreement with the old round does not complete the new target.
    let agree = Message::from(PostulateWrong {
        host: HostId(1),
        unit: unit_id(0),
        round,
        wrong: vec![],
    });
    h.handle(t0 + 310 * MS, unit_id(0), &agree)
        .expect("handled");
    let view = h.row(&a).expect("row");
    assert_eq!(view.row.directive.current, DirectiveState::Active);
    assert_eq!(
        view.handshake.expect("pending").target,
        DirectiveState::Inactive
    );
    // Undrain before completion: target equals current, nothing pending.
    h.set_target(t0 + 320 * MS, &a, DirectiveState::Active)
        .expect("known");
    drain(&mut h);
    assert!(h.handshakes().is_empty());
}

#[test]
fn goodbye_reaches_every_unit_and_stops_the_timers() {
    let (mut h, t0) = new_host(3);
    h.set_app(t0, app(0, 0), status(Health::Healthy, 10, 50))
        .expect("valid");
    h.goodbye();
    h.goodbye(); // a second call adds nothing
    let out = drain(&mut h);
    // Repeated: a single lost datagram must not leave the host cached.
    assert_eq!(GOODBYE_REPEAT, 3);
    assert_eq!(out.len(), 3 * GOODBYE_REPEAT);
    assert!(out.iter().all(|t| matches!(t.message, Message::Goodbye(_))));
    for j in 0..3 {
        let to_unit = out.iter().filter(|t| t.to == unit_id(j)).count();
        assert_eq!(to_unit, GOODBYE_REPEAT);
    }
    assert_eq!(h.poll_timeout(), None);
    h.handle_timeout(t0 + 10 * SEC);
    assert!(h.poll_transmit().is_none());
}

#[test]
fn local_api_errors_are_typed() {
    let (mut h, t0) = new_host(1);
    assert!(matches!(
        h.set_target(t0, &app(0, 0), DirectiveState::Draining),
        Err(HealthError::UnknownApp(_))
    ));
    assert!(matches!(
        h.remove_app(t0, &app(0, 0)),
        Err(HealthError::UnknownApp(_))
    ));
    let mut long = app(0, 0);
    long.info = "x".repeat(2000);
    assert!(matches!(
        h.set_app(t0, long, status(Health::Healthy, 1, 1)),
        Err(HealthError::InvalidApp(_))
    ));
    let mut s = HostSettings::new(HostId(1), vec![]);
    s.heartbeat_interval = Duration::ZERO;
    assert!(matches!(
        HostProtocol::new(s, t0),
        Err(HealthError::InvalidSettings {
            field: "heartbeat_interval",
            ..
        })
    ));
}

#[test]
fn without_units_a_handshake_completes_on_its_first_round() {
    let t0 = Instant::now();
    let mut h = HostProtocol::new(HostSettings::new(HostId(1), vec![]), t0).expect("valid");
    let a = app(0, 0);
    h.set_app(t0, a.clone(), status(Health::Healthy, 1, 1))
        .expect("valid");
    h.set_target(t0, &a, DirectiveState::Inactive)
        .expect("known");
    drain(&mut h);
    h.handle_timeout(t0 + 200 * MS); // round 1
    h.handle_timeout(t0 + 700 * MS); // evaluated: nobody to wait for
    drain(&mut h);
    assert_eq!(
        h.row(&a).expect("row").row.directive.current,
        DirectiveState::Inactive
    );
}

#[test]
fn a_silent_unit_is_given_up_visibly_while_an_objecting_one_blocks() {
    let (mut h, t0, a) = start_drain(3);
    let mut now = t0 + 200 * MS;
    let objection = |round| {
        Message::from(PostulateWrong {
            host: HostId(1),
            unit: unit_id(1),
            round,
            wrong: vec![WrongPostulate {
                app: app(0, 0),
                actual: Some(DirectiveState::Active),
            }],
        })
    };
    let agree = |round| {
        Message::from(PostulateWrong {
            host: HostId(1),
            unit: unit_id(2),
            round,
            wrong: vec![],
        })
    };
    // Unit 0 never answers; unit 1 keeps objecting; unit 2 agrees.
    while now < t0 + 31 * SEC {
        if h.poll_timeout().is_some_and(|t| t <= now) {
            h.handle_timeout(now);
        }
        let rounds: Vec<u32> = drain(&mut h)
            .iter()
            .filter_map(|t| match &t.message {
                Message::PostulateTableState(p) => Some(p.round),
                _ => None,
            })
            .collect();
        if let Some(&round) = rounds.first() {
            h.handle(now, unit_id(1), &objection(round))
                .expect("handled");
            h.handle(now, unit_id(2), &agree(round)).expect("handled");
        }
        now += 100 * MS;
    }
    let view = h.row(&a).expect("row");
    assert_eq!(
        view.row.directive.current,
        DirectiveState::Active,
        "unit 1 still objects"
    );
    let hs = view.handshake.expect("pending");
    assert_eq!(hs.given_up, vec![unit_id(0)]);
    assert_eq!(hs.waiting, vec![unit_id(1)]);
    assert_eq!(hs.agreed, vec![unit_id(2)]);
    assert_eq!(h.counters().units_given_up, 1);
    assert!(h.counters().rows_resent > 50);
}

/// Delivers every message both ways until quiet, except host messages
/// `lose` rejects.
fn exchange(
    h: &mut HostProtocol,
    c: &mut ConsolidatedCache,
    now: Instant,
    lose: impl Fn(&Message) -> bool,
) {
    loop {
        let mut quiet = true;
        while let Some(t) = h.poll_transmit() {
            quiet = false;
            if !lose(&t.message) {
                let _ = c.handle(now, SenderId::from(h.host()), &t.message);
            }
        }
        while let Some(t) = c.poll_transmit() {
            quiet = false;
            let _ = h.handle(now, c.unit(), &t.message);
        }
        if quiet {
            break;
        }
    }
}

#[test]
fn an_objecting_unit_one_generation_behind_ends_with_a_complete_copy() {
    let t0 = Instant::now();
    let mut h = HostProtocol::new(host_settings(0, 1), t0).expect("valid");
    let mut c = ConsolidatedCache::new(CacheSettings::new(unit_id(0)), t0).expect("valid");
    h.handle_timeout(t0);
    for k in 0..2 {
        h.set_app(t0, app(0, k), status(Health::Healthy, 10, 50))
            .expect("valid");
    }
    exchange(&mut h, &mut c, t0, |_| false);
    let cached = c.host(h.host()).expect("cached");
    assert!(cached.baseline && cached.table.same_rows(h.published()));
    // One change (one generation) covers two rows; the unit misses it.
    let t1 = t0 + 10 * MS;
    h.set_target(t1, &app(0, 0), DirectiveState::Draining)
        .expect("known");
    h.set_app(t1, app(0, 1), status(Health::Failing, 10, 50))
        .expect("known");
    exchange(&mut h, &mut c, t1, |m| matches!(m, Message::RowChange(_)));
    assert_eq!(
        c.host(h.host()).expect("cached").generation + 1,
        h.published().generation()
    );
    // The postulate round: the unit objects to the drained row, and the
    // host's answer must leave it with the whole change, not half of it
    // under the new generation.
    let t2 = t0 + 300 * MS;
    h.handle_timeout(t2);
    exchange(&mut h, &mut c, t2, |m| matches!(m, Message::Heartbeat(_)));
    let cached = c.host(h.host()).expect("cached");
    assert_eq!(cached.generation, h.published().generation());
    assert!(cached.baseline);
    assert!(
        cached.table.same_rows(h.published()),
        "a unit claiming a baseline holds every row of it"
    );
    assert_eq!(
        cached.table.get(&app(0, 1)).map(|r| r.status.health()),
        Some(Health::Failing)
    );
}

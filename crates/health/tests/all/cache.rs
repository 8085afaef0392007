//! ConsolidatedCache behaviour through its public API, one rule at a time.

use std::time::Instant;

use switchyard_health::{CacheSettings, ConsolidatedCache, Ignored, ServiceKey, Transmit};
use switchyard_wire::allotment::{
    AffinityAllotmentRequest, Allotment, AllotmentRequest, AllotmentScheme,
};
use switchyard_wire::health::{
    ConsolidatedHeartbeat, ContentCheck, Directive, DirectiveState, Health, Heartbeat, Postulate,
    PostulateTableState, Row, RowChange, RowOp, SendTableSnapshot,
};
use switchyard_wire::{HostId, Message, MessageKind, Protocol, SenderId};

use crate::sim::{MS, SEC, app, host_id, status, unit_id, vip};

fn drain(c: &mut ConsolidatedCache) -> Vec<Transmit<SenderId>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn row(i: usize, k: usize, health: Health, target: DirectiveState) -> Row {
    Row {
        app: app(i, k),
        status: status(health, 10, 50),
        directive: Directive {
            target,
            current: DirectiveState::Active,
        },
    }
}

fn heartbeat(host: HostId, generation: u64, digest: u64) -> Message {
    Message::from(Heartbeat {
        host,
        check: ContentCheck::Table { generation, digest },
        name: Some("h.example".into()),
        address: None,
        forward: false,
    })
}

fn snapshot(host: HostId, generation: u64, part: u16, parts: u16, rows: Vec<Row>) -> Message {
    Message::from(SendTableSnapshot {
        host,
        generation,
        part,
        parts,
        rows,
    })
}

fn from(host: HostId) -> SenderId {
    SenderId::from(host)
}

/// A cache that holds host 1 (id HostId(1)) with two rows at generation 10.
fn synced() -> (ConsolidatedCache, Instant) {
    let t0 = Instant::now();
    let mut c = ConsolidatedCache::new(CacheSettings::new(unit_id(0)), t0).expect("valid");
    let h = host_id(0);
    c.handle(t0, from(h), &heartbeat(h, 10, 0))
        .expect("handled");
    let out = drain(&mut c);
    assert!(
        matches!(&out[..], [t] if t.to == from(h) && t.message.kind() == MessageKind::GetTableSnapshot)
    );
    let rows = vec![
        row(0, 0, Health::Healthy, DirectiveState::Active),
        row(0, 1, Health::Healthy, DirectiveState::Active),
    ];
    c.handle(t0, from(h), &snapshot(h, 10, 0, 1, rows))
        .expect("applied");
    let digest = c.host(h).expect("cached").table.digest();
    c.handle(t0, from(h), &heartbeat(h, 10, digest))
        .expect("handled");
    assert!(drain(&mut c).is_empty(), "in sync: no snapshot request");
    assert!(c.host(h).expect("cached").in_sync);
    (c, t0)
}

#[test]
fn only_a_host_may_speak_for_itself() {
    let (mut c, t0) = synced();
    let forged = Message::from(RowChange {
        host: host_id(0),
        generation: 11,
        ops: vec![RowOp::Delete(app(0, 0))],
    });
    assert!(matches!(
        c.handle(t0, from(host_id(5)), &forged),
        Err(Ignored::SenderMismatch { .. })
    ));
    assert!(matches!(
        c.handle(
            t0,
            SenderId::from(unit_id(1)),
            &heartbeat(host_id(0), 10, 0)
        ),
        Err(Ignored::SenderMismatch { .. })
    ));
    assert_eq!(c.host(host_id(0)).expect("cached").table.len(), 2);
    assert_eq!(c.counters().ignored, 2);
}

#[test]
fn a_group_leader_forwards_members_heartbeats() {
    let t0 = Instant::now();
    let mut c = ConsolidatedCache::new(CacheSettings::new(unit_id(0)), t0).expect("valid");
    let leader = host_id(0);
    let consolidated = Message::from(ConsolidatedHeartbeat {
        leader,
        heartbeats: (0..3)
            .map(|i| match heartbeat(host_id(i), 1, 0) {
                Message::Heartbeat(hb) => hb,
                _ => unreachable!(),
            })
            .collect(),
    });
    c.handle(t0, from(leader), &consolidated).expect("handled");
    assert_eq!(c.hosts().count(), 3);
    let requests = drain(&mut c);
    assert_eq!(requests.len(), 3, "a snapshot request to each member");
    assert!(matches!(
        c.handle(t0, from(host_id(1)), &consolidated),
        Err(Ignored::SenderMismatch { .. })
    ));
}

#[test]
fn stale_and_duplicate_row_changes_never_revert_state() {
    let (mut c, t0) = synced();
    let h = host_id(0);
    let fail = Message::from(RowChange {
        host: h,
        generation: 11,
        ops: vec![RowOp::Update(row(
            0,
            0,
            Health::Failing,
            DirectiveState::Active,
        ))],
    });
    let heal = Message::from(RowChange {
        host: h,
        generation: 12,
        ops: vec![RowOp::Update(row(
            0,
            0,
            Health::Healthy,
            DirectiveState::Active,
        ))],
    });
    c.handle(t0, from(h), &fail).expect("applied");
    c.handle(t0, from(h), &heal).expect("applied");
    assert!(drain(&mut c).is_empty(), "contiguous: no resync");
    // The older change arrives again (duplicated or reordered).
    assert_eq!(
        c.handle(t0, from(h), &fail),
        Err(Ignored::StaleGeneration {
            host: h,
            generation: 11,
            cached: 12
        })
    );
    let cached = c.host(h).expect("cached");
    assert_eq!(cached.generation, 12);
    assert_eq!(
        cached.table.get(&app(0, 0)).expect("row").status.health(),
        Health::Healthy
    );
    assert_eq!(c.counters().stale_row_changes, 1);
    // An older snapshot does not revert it either.
    assert!(matches!(
        c.handle(t0, from(h), &snapshot(h, 11, 0, 1, vec![])),
        Err(Ignored::StaleGeneration { .. })
    ));
    assert_eq!(c.host(h).expect("cached").table.len(), 2);
}

#[test]
fn a_gap_is_applied_and_repaired_by_a_rate_limited_snapshot() {
    let (mut c, t0) = synced();
    let h = host_id(0);
    let gap = Message::from(RowChange {
        host: h,
        generation: 14,
        ops: vec![RowOp::Add(row(
            0,
            5,
            Health::Healthy,
            DirectiveState::Active,
        ))],
    });
    c.handle(t0 + SEC, from(h), &gap).expect("applied");
    let cached = c.host(h).expect("cached");
    assert_eq!(cached.generation, 14);
    assert!(!cached.in_sync && !cached.baseline);
    assert_eq!(drain(&mut c).len(), 1, "snapshot requested");
    // A heartbeat right after does not ask again (rate limit)...
    c.handle(t0 + SEC + 100 * MS, from(h), &heartbeat(h, 14, 1))
        .expect("handled");
    assert!(drain(&mut c).is_empty());
    // ...but one after the retry interval does.
    c.handle(t0 + 2 * SEC, from(h), &heartbeat(h, 14, 1))
        .expect("handled");
    assert_eq!(drain(&mut c).len(), 1);
    assert_eq!(c.counters().snapshots_requested, 3);
}

#[test]
fn snapshot_parts_assemble_in_any_order_and_stale_partials_expire() {
    let (mut c, t0) = synced();
    let h = host_id(0);
    let rows: Vec<Row> = (0..6)
        .map(|k| row(0, k, Health::Healthy, DirectiveState::Active))
        .collect();
    c.handle(t0, from(h), &snapshot(h, 20, 2, 3, rows[4..].to_vec()))
        .expect("part");
    c.handle(t0, from(h), &snapshot(h, 20, 0, 3, rows[..2].to_vec()))
        .expect("part");
    assert_eq!(c.host(h).expect("cached").generation, 10, "incomplete");
    c.handle(t0, from(h), &snapshot(h, 20, 1, 3, rows[2..4].to_vec()))
        .expect("part");
    let cached = c.host(h).expect("cached");
    assert_eq!((cached.generation, cached.table.len()), (20, 6));
    assert!(c.index_is_consistent());
    // A partial snapshot that never completes is dropped.
    c.handle(t0, from(h), &snapshot(h, 30, 0, 2, vec![]))
        .expect("part");
    assert!(c.poll_timeout().is_some_and(|t| t <= t0 + 3 * SEC));
    c.handle(
        t0 + 3 * SEC,
        from(h),
        &heartbeat(h, 20, c.host(h).expect("cached").table.digest()),
    )
    .expect("alive");
    c.handle_timeout(t0 + 3 * SEC);
    assert_eq!(c.counters().partial_snapshots_dropped, 1);
    c.handle(t0 + 3 * SEC, from(h), &snapshot(h, 30, 1, 2, vec![]))
        .expect("part");
    assert_eq!(
        c.host(h).expect("cached").generation,
        20,
        "first part was dropped"
    );
}

#[test]
fn postulates_are_always_answered() {
    let (mut c, t0) = synced();
    let h = host_id(0);
    let postulate = |state| {
        Message::from(PostulateTableState {
            host: h,
            round: 7,
            postulates: vec![
                Postulate {
                    app: app(0, 0),
                    state,
                },
                Postulate {
                    app: app(0, 9),
                    state,
                },
            ],
        })
    };
    c.handle(t0, from(h), &postulate(DirectiveState::Active))
        .expect("answered");
    let out = drain(&mut c);
    let Message::PostulateWrong(w) = &out[0].message else {
        panic!("answer expected")
    };
    assert_eq!(out[0].to, from(h));
    assert_eq!((w.host, w.unit, w.round), (h, unit_id(0), 7));
    assert_eq!(w.wrong.len(), 1, "only the unknown row is wrong");
    assert_eq!(w.wrong[0].app, app(0, 9));
    assert_eq!(w.wrong[0].actual, None);
    c.handle(t0, from(h), &postulate(DirectiveState::Draining))
        .expect("answered");
    let out = drain(&mut c);
    let Message::PostulateWrong(w) = &out[0].message else {
        panic!("answer expected")
    };
    assert_eq!(w.wrong[0].actual, Some(DirectiveState::Active));
    assert_eq!(c.counters().postulate_replies, 2);
}

#[test]
fn allotment_requests_are_answered_to_the_sender() {
    let (mut c, t0) = synced();
    let classifier = SenderId::from(unit_id(3));
    let request = Message::from(AllotmentRequest {
        request_id: 42,
        vip: vip(80),
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme: AllotmentScheme::Tokens,
        wanted_tokens: 10,
    });
    c.handle(t0, classifier, &request).expect("answered");
    let out = drain(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, classifier);
    let Message::AllotmentResponse(r) = &out[0].message else {
        panic!("response expected")
    };
    assert_eq!(r.request_id, 42);
    let Allotment::Tokens { entries, .. } = &r.allotment else {
        panic!("tokens")
    };
    // Rows k=0 (port 80) only: app(0, 1) serves port 81.
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].tokens, 10);
    let service = ServiceKey::new(vip(81), Protocol::Tcp, "");
    assert_eq!(c.endpoints(&service).len(), 1);
}

#[test]
fn affinity_allotment_requests_are_answered_to_the_sender_with_the_same_allotment() {
    let (mut c, t0) = synced();
    let router = SenderId::from(unit_id(3));
    let request = AllotmentRequest {
        request_id: 43,
        vip: vip(80),
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme: AllotmentScheme::Percentages,
        wanted_tokens: 0,
    };
    let message = Message::from(AffinityAllotmentRequest {
        request: request.clone(),
    });
    c.handle(t0, router, &message).expect("answered");
    let out = drain(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, router);
    let Message::AffinityAllotmentResponse(r) = &out[0].message else {
        panic!("affinity response expected")
    };
    assert_eq!(r.response, c.preview(&request, t0));
    assert_eq!(r.response.request_id, 43);
    assert!(r.affinity_only.is_empty(), "every row is active: {r:?}");
    assert_eq!(c.counters().allotments, 1);
}

#[test]
fn a_preview_is_the_allotment_without_counting_it() {
    let (mut c, t0) = synced();
    let request = AllotmentRequest {
        request_id: 7,
        vip: vip(80),
        protocol: Protocol::Tcp,
        info: String::new(),
        scheme: AllotmentScheme::Tokens,
        wanted_tokens: 10,
    };
    let preview = c.preview(&request, t0);
    assert_eq!(c.counters().allotments, 0, "a preview is not counted");
    assert_eq!(c.allot(&request, t0), preview);
    assert_eq!(c.counters().allotments, 1);
    // A host that aged out is in neither.
    let late = t0 + 10 * SEC;
    let Allotment::Tokens { entries, .. } = c.preview(&request, late).allotment else {
        panic!("tokens")
    };
    assert!(entries.is_empty());
}

#[test]
fn other_message_kinds_are_not_for_a_cache() {
    let (mut c, t0) = synced();
    let m = Message::from(switchyard_wire::health::GetTableSnapshot {
        requester: unit_id(1),
    });
    assert_eq!(
        c.handle(t0, SenderId::from(unit_id(1)), &m),
        Err(Ignored::NotForThisMachine(MessageKind::GetTableSnapshot))
    );
}

#[test]
fn row_changes_of_unknown_hosts_wait_for_a_heartbeat() {
    let t0 = Instant::now();
    let mut c = ConsolidatedCache::new(CacheSettings::new(unit_id(0)), t0).expect("valid");
    let h = host_id(2);
    let rc = Message::from(RowChange {
        host: h,
        generation: 5,
        ops: vec![RowOp::Add(row(
            2,
            0,
            Health::Healthy,
            DirectiveState::Active,
        ))],
    });
    assert_eq!(c.handle(t0, from(h), &rc), Err(Ignored::UnknownHost(h)));
    assert_eq!(c.hosts().count(), 0);
}

#[test]
fn a_duplicated_goodbye_does_not_let_a_late_heartbeat_bring_the_host_back() {
    let (mut c, t0) = synced();
    let h = host_id(0);
    let digest = c.host(h).expect("cached").table.digest();
    let goodbye = Message::from(switchyard_wire::health::Goodbye { host: h });
    c.handle(t0 + MS, from(h), &goodbye).expect("cleared");
    // Hosts repeat their goodbye; the copies change nothing.
    c.handle(t0 + 2 * MS, from(h), &goodbye)
        .expect("a repeated goodbye is accepted");
    c.handle(t0 + 3 * MS, from(h), &goodbye)
        .expect("a repeated goodbye is accepted");
    assert_eq!(c.counters().goodbyes, 1);
    // A heartbeat sent before the goodbye, delivered late: no ghost.
    assert_eq!(
        c.handle(t0 + 4 * MS, from(h), &heartbeat(h, 10, digest)),
        Err(Ignored::Departed(h))
    );
    assert!(c.host(h).is_none());
    assert!(drain(&mut c).is_empty(), "no snapshot request for a ghost");
    // A goodbye from a host never seen is still unknown.
    let stranger = host_id(5);
    assert_eq!(
        c.handle(
            t0 + 5 * MS,
            from(stranger),
            &Message::from(switchyard_wire::health::Goodbye { host: stranger })
        ),
        Err(Ignored::UnknownHost(stranger))
    );
    // A restarted host (higher generation) is welcome again.
    c.handle(t0 + 6 * MS, from(h), &heartbeat(h, 11, 0))
        .expect("a newer generation");
    assert!(c.host(h).is_some());
}

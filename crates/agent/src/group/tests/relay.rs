//! The heartbeat relay alone: what goes where in each mode.

use std::time::{Duration, Instant};

use switchyard_health::Transmit;
use switchyard_wire::health::{ConsolidatedHeartbeat, ContentCheck, Goodbye, Heartbeat};
use switchyard_wire::{HostId, Message, SenderId, UnitId};

use crate::group::{
    GroupView, HeartbeatRelay, RelayMode, RelayRejected, RelaySettings, RelayTo, Relayed,
};

const UNITS: [UnitId; 2] = [UnitId(100), UnitId(101)];
const INTERVAL: Duration = Duration::from_secs(1);

fn hb(host: u32, generation: u64) -> Heartbeat {
    Heartbeat {
        host: HostId(host),
        check: ContentCheck::Table {
            generation,
            digest: 7,
        },
        name: None,
        address: None,
        forward: false,
    }
}

fn forwarded(host: u32, generation: u64) -> Heartbeat {
    Heartbeat {
        forward: true,
        ..hb(host, generation)
    }
}

fn view(me: u32, live: &[u32]) -> GroupView {
    GroupView::from_live(HostId(me), live.iter().map(|&h| HostId(h)))
}

fn relay(me: u32) -> HeartbeatRelay {
    HeartbeatRelay::new(RelaySettings::new(HostId(me), INTERVAL))
}

/// Routes one own heartbeat for every unit, as the health protocol emits it.
fn interval(r: &mut HeartbeatRelay, now: Instant, v: &GroupView, own: &Heartbeat) -> Vec<Relayed> {
    UNITS
        .iter()
        .filter_map(|&to| {
            r.route(
                now,
                v,
                Transmit {
                    to,
                    message: Message::from(own.clone()),
                },
            )
        })
        .collect()
}

fn consolidated(out: &[Relayed]) -> Vec<(UnitId, ConsolidatedHeartbeat)> {
    out.iter()
        .map(|r| match (&r.to, &r.message) {
            (RelayTo::Unit(u), Message::ConsolidatedHeartbeat(c)) => (*u, c.clone()),
            other => panic!("expected a consolidated heartbeat to a unit, got {other:?}"),
        })
        .collect()
}

fn hosts(c: &ConsolidatedHeartbeat) -> Vec<u32> {
    c.heartbeats.iter().map(|h| h.host.0).collect()
}

#[test]
fn leader_sends_one_consolidation_per_unit_per_interval() {
    let t0 = Instant::now();
    let v = view(1, &[1, 2, 3]);
    let mut r = relay(1);
    assert_eq!(r.mode(&v), RelayMode::Lead);
    r.handle_member_heartbeat(t0, &v, SenderId(3), forwarded(3, 9))
        .unwrap();
    r.handle_member_heartbeat(t0, &v, SenderId(2), forwarded(2, 4))
        .unwrap();
    for i in 0..5u32 {
        let now = t0 + INTERVAL * i;
        // Members keep sending once per interval.
        r.handle_member_heartbeat(now, &v, SenderId(2), forwarded(2, 4))
            .unwrap();
        r.handle_member_heartbeat(now, &v, SenderId(3), forwarded(3, 9))
            .unwrap();
        let out = consolidated(&interval(&mut r, now, &v, &hb(1, 5)));
        assert_eq!(out.len(), UNITS.len());
        for ((unit, c), want) in out.iter().zip(UNITS) {
            assert_eq!(*unit, want);
            assert_eq!(c.leader, HostId(1));
            assert_eq!(hosts(c), vec![1, 2, 3]);
        }
    }
    assert_eq!(r.counters().consolidated, 10);
}

#[test]
fn leader_drops_down_and_silent_members() {
    let t0 = Instant::now();
    let mut r = relay(1);
    let v = view(1, &[1, 2, 3]);
    r.handle_member_heartbeat(t0, &v, SenderId(2), forwarded(2, 1))
        .unwrap();
    r.handle_member_heartbeat(t0, &v, SenderId(3), forwarded(3, 1))
        .unwrap();
    // Host 3 declared down by the group.
    let v = view(1, &[1, 2]);
    let out = consolidated(&interval(&mut r, t0 + INTERVAL, &v, &hb(1, 1)));
    assert_eq!(hosts(&out[0].1), vec![1, 2]);
    // Host 2 stays live but its heartbeats stop: relayed for 3 intervals.
    let at = t0 + INTERVAL * 3;
    assert_eq!(
        hosts(&consolidated(&interval(&mut r, at, &v, &hb(1, 1)))[0].1),
        vec![1, 2]
    );
    let at = t0 + INTERVAL * 3 + Duration::from_millis(1);
    assert_eq!(
        hosts(&consolidated(&interval(&mut r, at, &v, &hb(1, 1)))[0].1),
        vec![1]
    );
    // Host 3 back in the group does not resurrect its old heartbeat.
    let v = view(1, &[1, 2, 3]);
    assert!(r.relayed_members(at, &v).is_empty());
}

#[test]
fn member_sends_once_per_interval_to_the_leader_only() {
    let t0 = Instant::now();
    let v = view(2, &[1, 2, 3]);
    let mut r = relay(2);
    assert_eq!(r.mode(&v), RelayMode::Member { leader: HostId(1) });
    for i in 0..4u32 {
        let now = t0 + INTERVAL * i;
        let out = interval(&mut r, now, &v, &hb(2, 3));
        assert_eq!(
            out,
            vec![Relayed {
                to: RelayTo::Host(HostId(1)),
                message: Message::from(forwarded(2, 3)),
            }]
        );
    }
    assert_eq!(r.counters().to_leader, 4);
}

#[test]
fn new_leader_receives_the_next_heartbeat_at_once() {
    let t0 = Instant::now();
    let mut r = relay(3);
    interval(&mut r, t0, &view(3, &[1, 2, 3]), &hb(3, 1));
    // Host 1 died, host 2 leads now; the same heartbeat again, still within
    // the half interval, goes to the new leader.
    let out = interval(
        &mut r,
        t0 + Duration::from_millis(100),
        &view(3, &[2, 3]),
        &hb(3, 1),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, RelayTo::Host(HostId(2)));
}

#[test]
fn lone_host_sends_directly_to_units() {
    let t0 = Instant::now();
    let v = GroupView::alone(HostId(4));
    let mut r = relay(4);
    assert_eq!(r.mode(&v), RelayMode::Direct);
    let out = interval(&mut r, t0, &v, &hb(4, 2));
    let want: Vec<Relayed> = UNITS
        .iter()
        .map(|&u| Relayed {
            to: RelayTo::Unit(u),
            message: Message::from(hb(4, 2)),
        })
        .collect();
    assert_eq!(out, want);
}

#[test]
fn other_messages_always_go_to_the_units() {
    let t0 = Instant::now();
    for v in [
        view(1, &[1, 2]),
        view(2, &[1, 2]),
        GroupView::alone(HostId(2)),
    ] {
        let mut r = relay(v.me.0);
        let goodbye = Message::from(Goodbye { host: v.me });
        let out = r.route(
            t0,
            &v,
            Transmit {
                to: UnitId(100),
                message: goodbye.clone(),
            },
        );
        assert_eq!(
            out,
            Some(Relayed {
                to: RelayTo::Unit(UnitId(100)),
                message: goodbye
            })
        );
    }
}

#[test]
fn member_heartbeats_are_checked() {
    let t0 = Instant::now();
    let v = view(1, &[1, 2]);
    let mut r = relay(1);
    assert_eq!(
        r.handle_member_heartbeat(t0, &v, SenderId(3), forwarded(2, 1)),
        Err(RelayRejected::ForgedSender {
            from: SenderId(3),
            host: HostId(2)
        })
    );
    assert_eq!(
        r.handle_member_heartbeat(t0, &v, SenderId(2), hb(2, 1)),
        Err(RelayRejected::NotForwarded(HostId(2)))
    );
    assert_eq!(
        r.handle_member_heartbeat(t0, &v, SenderId(5), forwarded(5, 1)),
        Err(RelayRejected::NotAMember(HostId(5)))
    );
    assert_eq!(
        r.handle_member_heartbeat(t0, &v, SenderId(1), forwarded(1, 1)),
        Err(RelayRejected::AboutMe)
    );
    assert_eq!(r.counters().rejected, 4);
    assert!(r.relayed_members(t0, &v).is_empty());
}
